"""The ledger read API on a real gateway and PostgreSQL, with real JWTs.

The database is migrated with the runtime's and the invoice worker's migrations, and the
ledger is written with SQL into the worker's tables (``tests/ledger_support.py``), with
ids unique to each test, so tests share the module's database without seeing each
other's rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_gateway.ledger_store import READ_VIEWS
from tests.fleet_settings import FleetSettings
from tests.gateway import free_port, serve_gateway
from tests.integration.test_access_api import (
    SERVICE_SCOPE,
    assert_problem,
    gateway_settings,
    reader_role,
    uid,
    user_token,
)
from tests.jwt_tokens import AUDIENCE, HS256_SECRET, ISSUER, claims, hs256
from tests.ledger_support import (
    PDF_BYTES,
    at,
    dispute,
    insert,
    invoice,
    migrate_ledger,
    payment,
    receipt,
    receipt_number,
    refund,
    seed,
    subscription,
)
from tests.runtime_toy import metric

pytestmark = pytest.mark.integration

LEDGER_SCOPE = FleetSettings().jwt_ledger_scope
READ_API = {"jwt_hs256_secret": HS256_SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}


@dataclass
class Ledger:
    url: str  # the gateway's
    database_url: str
    settings: FleetSettings


@pytest.fixture(scope="module")
async def ledger_database(create_database: Any) -> str:
    url: str = await create_database(migrated=False)
    await migrate_ledger(url)
    return url


@pytest.fixture(scope="module")
async def ledger(kafka: Any, ledger_database: str) -> AsyncIterator[Ledger]:
    settings = gateway_settings(kafka, ledger_database, **READ_API)
    async with serve_gateway(settings):
        yield Ledger(f"http://127.0.0.1:{settings.gateway_port}", ledger_database, settings)


def ledger_token(sub: str = "svc-billing") -> str:
    return hs256(claims(sub=sub, scope=f"profile {LEDGER_SCOPE}"))


async def get(
    url: str, path: str, token: str | None = None, params: dict[str, Any] | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.get(path, headers=headers, params=params)


def when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["data"]]


async def walk(url: str, path: str, token: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a list, page by page."""
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):  # bounded: a cursor that never ends the walk fails the test
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        response = await get(url, path, token, page_params)
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body["data"]
        if (cursor := body["next_cursor"]) is None:
            return rows
    raise AssertionError("the walk did not end")


# -- a user's records ----------------------------------------------------------------------


async def test_a_user_lists_the_invoices_of_all_their_customers_newest_first(
    ledger: Ledger,
) -> None:
    user, cus_a, cus_b, stranger = uid("user"), uid("cus"), uid("cus"), uid("cus")
    line = {"price_id": "price_pro", "product_id": "prod_pro", "quantity": 2, "amount": 1000}
    rows = [
        invoice(uid("in"), cus_a, at(1), number="INV-1", lines=[{**line, "description": "Pro"}]),
        invoice(uid("in"), cus_b, at(3), status="open", amount_paid=0, amount_remaining=1190),
        invoice(uid("in"), cus_a, at(2), account="acct_connected"),
        invoice(uid("in"), stranger, at(4)),  # another user's
        invoice(uid("in"), None, at(5)),  # no customer: nobody's
    ]
    await seed(
        ledger.database_url,
        users={cus_a: user, cus_b: user, stranger: uid("user")},
        invoices=rows,
    )

    listing = await get(ledger.url, "/v1/invoices", user_token(user))

    assert ids(listing) == [rows[1]["invoice_id"], rows[2]["invoice_id"], rows[0]["invoice_id"]]
    assert listing.json()["next_cursor"] is None
    open_one, connected, first = listing.json()["data"]
    assert (open_one["status"], open_one["customer_id"]) == ("open", cus_b)
    assert (open_one["total"], open_one["amount_remaining"], open_one["currency"]) == (
        1190,
        1190,
        "eur",
    )
    assert (connected["account"], first["account"]) == ("acct_connected", None)
    assert when(first["created_at"]) == at(1)
    assert "lines" not in first  # a list is light: the lines come with the invoice

    one = await get(ledger.url, f"/v1/invoices/{rows[0]['invoice_id']}", user_token(user))
    assert one.status_code == 200, one.text
    assert one.json() == {**first, "lines": [{**line, "description": "Pro"}]}


async def test_another_users_record_is_404_as_an_unknown_one(ledger: Ledger) -> None:
    user, mine, theirs = uid("user"), uid("cus"), uid("cus")
    their_invoice, their_payment = uid("in"), uid("pi")
    number = receipt_number()
    await seed(
        ledger.database_url,
        users={mine: user, theirs: uid("user")},
        invoices=[invoice(their_invoice, theirs, at(0))],
        payments=[payment(their_payment, theirs, at(0))],
        receipts=[receipt(number, their_payment, theirs)],
        pdfs={number: PDF_BYTES},
    )
    token = user_token(user)

    for path, unknown in [
        (f"/v1/invoices/{their_invoice}", f"/v1/invoices/{uid('in')}"),
        (f"/v1/receipts/{number}", f"/v1/receipts/{number}0"),
        (f"/v1/receipts/{number}.pdf", f"/v1/receipts/{number}0.pdf"),
    ]:
        theirs_answer, unknown_answer = (
            await get(ledger.url, path, token),
            await get(ledger.url, unknown, token),
        )
        assert_problem(theirs_answer, 404)
        assert theirs_answer.json() == unknown_answer.json(), path  # nothing tells them apart
    for listing in ("invoices", "payments", "subscriptions"):
        assert ids(await get(ledger.url, f"/v1/{listing}", token)) == []


async def test_payment_history_carries_refunds_disputes_and_the_receipt(ledger: Ledger) -> None:
    user, customer = uid("user"), uid("cus")
    paid, failed, number = uid("pi"), uid("pi"), receipt_number()
    refunds = [refund(uid("re"), paid, at(12), amount=300), refund(uid("re"), paid, at(11))]
    await seed(
        ledger.database_url,
        users={customer: user},
        payments=[
            payment(
                paid,
                customer,
                at(10),
                amount_refunded=800,
                card_brand="visa",
                card_last4="4242",
                payment_method_type="card",
                succeeded_at=at(10),
            ),
            payment(
                failed,
                customer,
                at(20),
                status="requires_payment_method",
                failure_code="card_declined",
            ),
        ],
        refunds=refunds,
        disputes=[dispute(uid("dp"), paid, at(13))],
        receipts=[receipt(number, paid, customer)],
    )

    response = await get(ledger.url, "/v1/payments", user_token(user))

    assert ids(response) == [failed, paid]
    declined, settled = response.json()["data"]
    assert (declined["status"], declined["failure_code"], declined["receipt_number"]) == (
        "requires_payment_method",
        "card_declined",
        None,
    )
    assert (declined["refunds"], declined["disputes"]) == ([], [])
    assert (settled["amount"], settled["amount_refunded"], settled["currency"]) == (
        2500,
        800,
        "usd",
    )
    assert (settled["card_brand"], settled["card_last4"]) == ("visa", "4242")
    assert settled["receipt_number"] == number
    # Oldest first, in minor units with their currency, timestamps as everywhere else.
    assert [(r["id"], r["amount"], r["currency"]) for r in settled["refunds"]] == [
        (refunds[1]["refund_id"], 500, "usd"),
        (refunds[0]["refund_id"], 300, "usd"),
    ]
    assert [when(r["created_at"]) for r in settled["refunds"]] == [at(11), at(12)]
    [chargeback] = settled["disputes"]
    assert (chargeback["status"], chargeback["amount_withdrawn"]) == ("needs_response", 2500)
    assert when(chargeback["created_at"]) == at(13)
    assert chargeback["created_at"][-1] == settled["created_at"][-1] == "Z"


async def test_the_subscription_status_page(ledger: Ledger) -> None:
    user, customer = uid("user"), uid("cus")
    active, canceled = uid("sub"), uid("sub")
    items = [
        {"price_id": "price_team", "product_id": "prod_team", "quantity": 5},
        {"price_id": "price_addon", "product_id": "prod_addon", "quantity": 1},
    ]
    await seed(
        ledger.database_url,
        users={customer: user},
        subscriptions=[
            subscription(active, customer, at(30), items=items, cancel_at_period_end=True),
            subscription(canceled, customer, at(1), status="canceled", canceled_at=at(29)),
        ],
    )

    response = await get(ledger.url, "/v1/subscriptions", user_token(user))

    assert ids(response) == [active, canceled]
    current, old = response.json()["data"]
    assert (current["status"], current["cancel_at_period_end"], current["items"]) == (
        "active",
        True,
        items,
    )
    assert (current["price_id"], current["quantity"]) == ("price_team", 5)
    assert when(current["current_period_end"]) == at(30 + 30 * 24 * 60)
    assert (old["status"], when(old["canceled_at"])) == ("canceled", at(29))


async def test_a_receipt_and_its_stored_pdf(ledger: Ledger) -> None:
    user, customer = uid("user"), uid("cus")
    rendered_payment, pending_payment = uid("pi"), uid("pi")
    rendered, pending = receipt_number(), receipt_number()
    in_id = uid("in")
    await seed(
        ledger.database_url,
        users={customer: user},
        invoices=[invoice(in_id, customer, at(0), number="INV-0042")],
        payments=[
            payment(rendered_payment, customer, at(1), invoice_id=in_id, amount_refunded=100),
            payment(pending_payment, customer, at(2)),
        ],
        receipts=[
            receipt(rendered, rendered_payment, customer),
            receipt(pending, pending_payment, customer),
        ],
        pdfs={rendered: PDF_BYTES},
    )
    token = user_token(user)

    details = await get(ledger.url, f"/v1/receipts/{rendered}", token)
    pdf = await get(ledger.url, f"/v1/receipts/{rendered}.pdf", token)
    not_yet = await get(ledger.url, f"/v1/receipts/{pending}.pdf", token)

    assert details.status_code == 200, details.text
    body = details.json()
    assert (body["number"], body["payment_id"], body["pdf_ready"]) == (
        rendered,
        rendered_payment,
        True,
    )
    assert (body["invoice_id"], body["invoice_number"]) == (in_id, "INV-0042")
    assert (body["amount"], body["amount_refunded"], body["currency"]) == (2500, 100, "usd")
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content == PDF_BYTES
    assert pdf.headers["content-disposition"] == f'inline; filename="{rendered}.pdf"'
    assert "not rendered yet" in assert_problem(not_yet, 503)["detail"]
    assert int(not_yet.headers["retry-after"]) > 0
    assert (await get(ledger.url, f"/v1/receipts/{pending}", token)).json()["pdf_ready"] is False

    # Rendered meanwhile: the same request now serves it.
    await seed(ledger.database_url, pdfs={pending: PDF_BYTES + b"%second"})
    later = await get(ledger.url, f"/v1/receipts/{pending}.pdf", token)
    assert (later.status_code, later.content) == (200, PDF_BYTES + b"%second")


async def test_a_receipt_issued_before_its_customer_was_known_is_the_payment_s_customer_s(
    ledger: Ledger,
) -> None:
    """Issued for a guest's charge (no customer then); the payment's customer came later:
    the customer's user and services read the receipt and its PDF, another user does not."""
    user, customer = uid("user"), uid("cus")
    pi_id, number = uid("pi"), receipt_number()
    await seed(
        ledger.database_url,
        users={customer: user},
        payments=[payment(pi_id, customer, at(1))],
        receipts=[receipt(number, pi_id, None)],
        pdfs={number: PDF_BYTES},
    )
    mine = user_token(user)
    service = hs256(claims(sub="svc-3", scope=LEDGER_SCOPE))

    details = await get(ledger.url, f"/v1/receipts/{number}", mine)
    pdf = await get(ledger.url, f"/v1/receipts/{number}.pdf", mine)
    by_service = await get(ledger.url, f"/v1/customers/{customer}/receipts/{number}", service)
    stranger = await get(ledger.url, f"/v1/receipts/{number}", user_token(uid("user")))

    assert (details.status_code, pdf.status_code, by_service.status_code) == (200, 200, 200)
    assert details.json()["customer_id"] == customer
    assert pdf.content == PDF_BYTES
    assert stranger.status_code == 404


# -- services ------------------------------------------------------------------------------


def service_paths(customer: str, invoice_id: str, number: str) -> list[str]:
    base = f"/v1/customers/{customer}"
    return [
        f"{base}/invoices",
        f"{base}/invoices/{invoice_id}",
        f"{base}/payments",
        f"{base}/subscriptions",
        f"{base}/receipts/{number}",
        f"{base}/receipts/{number}.pdf",
    ]


async def test_a_service_with_the_ledger_scope_reads_any_customer(ledger: Ledger) -> None:
    customer, other = uid("cus"), uid("cus")
    in_id, pi_id, sub_id = uid("in"), uid("pi"), uid("sub")
    number = receipt_number()
    await seed(
        ledger.database_url,
        users={customer: None},  # mapped to no user: only services can read it
        invoices=[invoice(in_id, customer, at(0)), invoice(uid("in"), other, at(1))],
        payments=[payment(pi_id, customer, at(0))],
        subscriptions=[subscription(sub_id, customer, at(0))],
        receipts=[receipt(number, pi_id, customer)],
        pdfs={number: PDF_BYTES},
    )
    token = hs256(claims(sub="svc-2", scp=[LEDGER_SCOPE]))  # `scp` as a list works too

    answers = [await get(ledger.url, p, token) for p in service_paths(customer, in_id, number)]

    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    invoices, one, payments, subscriptions, details, pdf = answers
    assert ids(invoices) == [in_id]
    assert (one.json()["id"], one.json()["lines"]) == (in_id, [])
    assert (ids(payments), ids(subscriptions)) == ([pi_id], [sub_id])
    assert (details.json()["number"], pdf.content) == (number, PDF_BYTES)
    # Another customer's record under this customer's path is not found.
    elsewhere = await get(ledger.url, f"/v1/customers/{other}/invoices/{in_id}", token)
    assert_problem(elsewhere, 404)


@pytest.mark.parametrize(
    "scope", ["", SERVICE_SCOPE, "ledger:read"], ids=["no scope", "entitlements", "near miss"]
)
async def test_a_token_without_the_ledger_scope_is_forbidden_on_customer_routes(
    ledger: Ledger, scope: str
) -> None:
    token = hs256(claims(sub=uid("user"), scope=scope))
    for path in service_paths("cus_any", "in_any", "R-2030-000001"):
        response = await get(ledger.url, path, token)
        assert_problem(response, 403)
        assert response.headers["www-authenticate"] == (
            f'Bearer error="insufficient_scope", scope="{LEDGER_SCOPE}"'
        ), path


# -- pagination, filters, limits -----------------------------------------------------------


@pytest.mark.parametrize("caller", ["user", "service"])
async def test_walking_the_pages_while_rows_are_written_skips_and_repeats_nothing(
    ledger: Ledger, caller: str
) -> None:
    """Rows newer than the walk, older than it, and at the very time of the page just read
    (ties, broken by id) are written by another task between the pages: every row that
    existed at the start comes exactly once, in order."""
    user, cus_a, cus_b = uid("user"), uid("cus"), uid("cus")
    customers = [cus_a, cus_b] if caller == "user" else [cus_a]
    # Three rows per minute: ties on created_at, across the user's customers.
    existing = [invoice(uid("in"), customers[n % len(customers)], at(n // 3)) for n in range(47)]
    await seed(ledger.database_url, users={cus_a: user, cus_b: user}, invoices=existing)
    token, path = user_token(user), "/v1/invoices"
    if caller == "service":
        token, path = ledger_token(), f"/v1/customers/{cus_a}/invoices"

    read_up_to: asyncio.Queue[datetime | None] = asyncio.Queue()
    written = asyncio.Event()
    added: list[str] = []

    async def writer() -> None:
        conn = await asyncpg.connect(ledger.database_url)
        try:
            while (position := await read_up_to.get()) is not None:
                new = [
                    invoice(uid("in"), cus_a, at(10_000 + len(added))),  # newest of all
                    invoice(uid("in"), cus_a, at(-1 - len(added))),  # oldest of all
                    invoice(uid("in"), cus_a, position),  # a tie with the page's last
                ]
                await insert(conn, "ledger_invoices", new)
                added.extend(row["invoice_id"] for row in new)
                written.set()
        finally:
            await conn.close()

    async def reader() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(100):
            params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            response = await get(ledger.url, path, token, params)
            assert response.status_code == 200, response.text
            page = response.json()
            rows += page["data"]
            if (cursor := page["next_cursor"]) is None:
                break
            written.clear()
            await read_up_to.put(when(page["data"][-1]["created_at"]))
            await asyncio.wait_for(written.wait(), 10)
        await read_up_to.put(None)
        return rows

    rows, _ = await asyncio.gather(reader(), writer())

    seen = [row["id"] for row in rows]
    assert len(seen) == len(set(seen))  # nothing repeated, new rows included
    assert {row["invoice_id"] for row in existing} <= set(seen)  # nothing that existed skipped
    assert set(seen) - {row["invoice_id"] for row in existing} <= set(added)
    order = [(when(row["created_at"]), row["id"]) for row in rows]
    assert order == sorted(order, reverse=True)
    assert len(added) >= 3 * 10  # the writer really wrote between the pages


async def test_status_and_created_filters(ledger: Ledger) -> None:
    customer = uid("cus")
    statuses = ["paid", "open", "void", "paid", "open", "paid", "paid", "open", "void", "paid"]
    rows = [invoice(uid("in"), customer, at(n), status=s) for n, s in enumerate(statuses)]
    pays = [
        payment(uid("pi"), customer, at(0), status="succeeded"),
        payment(uid("pi"), customer, at(1), status="requires_payment_method"),
    ]
    subs = [
        subscription(uid("sub"), customer, at(0), status="canceled"),
        subscription(uid("sub"), customer, at(1)),
    ]
    await seed(
        ledger.database_url,
        users={customer: None},
        invoices=rows,
        payments=pays,
        subscriptions=subs,
    )
    token, path = ledger_token(), f"/v1/customers/{customer}/invoices"

    def invoice_ids(*minutes: int) -> list[str]:
        return [rows[n]["invoice_id"] for n in minutes]

    async def listed(**params: Any) -> list[str]:
        return [row["id"] for row in await walk(ledger.url, path, token, limit=2, **params)]

    assert await listed(status="open") == invoice_ids(7, 4, 1)
    window = {"created[gte]": at(3).isoformat(), "created[lt]": at(7).isoformat()}
    assert await listed(**window) == invoice_ids(6, 5, 4, 3)  # gte inclusive, lt exclusive
    assert await listed(**window, status="paid") == invoice_ids(6, 5, 3)
    unix = {"created[gte]": int(at(8).timestamp())}
    assert await listed(**unix) == invoice_ids(9, 8)
    assert await listed(status="draft") == []
    base = f"/v1/customers/{customer}"
    failed = await get(ledger.url, f"{base}/payments", token, {"status": "succeeded"})
    assert ids(failed) == [pays[0]["payment_id"]]
    active = await get(ledger.url, f"{base}/subscriptions", token, {"status": "active"})
    assert ids(active) == [subs[1]["subscription_id"]]


async def test_limit_defaults_to_20_and_is_capped_at_100(ledger: Ledger) -> None:
    customer = uid("cus")
    await seed(
        ledger.database_url,
        users={customer: None},
        invoices=[invoice(uid("in"), customer, at(n)) for n in range(105)],
    )
    token, path = ledger_token(), f"/v1/customers/{customer}/invoices"

    default = await get(ledger.url, path, token)
    capped = await get(ledger.url, path, token, {"limit": 500})
    rest = await get(
        ledger.url, path, token, {"limit": 100, "cursor": capped.json()["next_cursor"]}
    )
    one = await get(ledger.url, path, token, {"limit": 1})

    assert (len(ids(default)), default.json()["next_cursor"] is not None) == (20, True)
    assert (len(ids(capped)), capped.json()["next_cursor"] is not None) == (100, True)
    assert (len(ids(rest)), rest.json()["next_cursor"]) == (5, None)
    assert set(ids(capped)).isdisjoint(ids(rest))
    assert ids(one) == ids(default)[:1]


BAD_QUERIES = [
    ("limit=0", "limit"),
    ("limit=-3", "limit"),
    ("limit=many", "limit"),
    ("cursor=not-a-cursor", "cursor"),
    ("cursor=WzEsMiwzXQ", "cursor"),  # base64 of [1,2,3]: JSON, but not a position
    ("cursor=WzEsImlkAHgiXQ", "cursor"),  # [1,"id\u0000x"]: an id PostgreSQL cannot hold
    ("cursor=Wzk5OTk5OTk5OTk5OTk5OTk5OTksIngiXQ", "cursor"),  # a time past year 9999
    ("status=pa%00id", "status"),
    ("created[gte]=yesterday", "created[gte]"),
    ("created[lt]=2030-01-01T00:00:00", "created[lt]"),  # no offset: ambiguous
    ("created[gte]=9999-12-31T23:59:59-14:00", "created[gte]"),  # past 9999 in UTC
    ("created[lt]=0001-01-01T00:00:00%2B14:00", "created[lt]"),  # before year 1 in UTC
    ("created[gte]=99999999999999999999", "created[gte]"),  # seconds past 9999
    ("created_gte=2030-01-01T00:00:00Z", "created_gte"),  # not a parameter
    ("limit=1&limit=2", "limit"),
]


@pytest.mark.parametrize(("query", "named"), BAD_QUERIES, ids=[q for q, _ in BAD_QUERIES])
@pytest.mark.parametrize("listing", ["invoices", "payments", "customers/cus_x/subscriptions"])
async def test_a_bad_cursor_limit_or_filter_is_a_400_naming_it(
    ledger: Ledger, query: str, named: str, listing: str
) -> None:
    token = ledger_token()
    response = await get(ledger.url, f"/v1/{listing}?{query}", token)
    assert assert_problem(response, 400)["detail"].startswith(f"{named}: "), response.text


escaped = st.binary(max_size=10).map(lambda raw: "".join(f"%{b:02X}" for b in raw))
plain = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&#%"),
    max_size=12,
)
names = (
    st.sampled_from(
        ["limit", "cursor", "status", "created[gte]", "created%5Blt%5D", "created[lt]", ""]
    )
    | plain
)
query_strings = st.lists(
    st.builds(lambda name, value: f"{name}={value}", names, escaped | plain), max_size=4
).map("&".join)


async def test_odd_query_strings_never_give_5xx(ledger: Ledger) -> None:
    statuses: set[int] = set()
    customer = uid("cus")
    await seed(ledger.database_url, invoices=[invoice(uid("in"), customer, at(0))])
    headers = {"Authorization": f"Bearer {ledger_token()}"}

    def fuzz() -> None:
        with httpx.Client(base_url=ledger.url, timeout=10, headers=headers) as client:

            @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
            @given(query=query_strings, listing=st.sampled_from(["invoices", "payments"]))
            def one(query: str, listing: str) -> None:
                response = client.get(f"/v1/customers/{customer}/{listing}?{query}")
                statuses.add(response.status_code)
                assert response.status_code in (200, 400), (query, response.text)

            one()

    await asyncio.to_thread(fuzz)
    assert statuses == {200, 400}


# -- the fast path, OpenAPI, metrics -------------------------------------------------------


async def test_fast_path_answers_exactly_as_the_fastapi_routes(ledger: Ledger) -> None:
    """The ledger routes skip FastAPI's layers (api_gateway.ledger.serve_fast); every
    answer, refusals and paths it leaves to FastAPI included, matches FastAPI's own."""
    user, customer = uid("user"), uid("cus")
    in_id, pi_id = uid("in"), uid("pi")
    done, pending = receipt_number(), receipt_number()
    await seed(
        ledger.database_url,
        users={customer: user},
        invoices=[invoice(f"{in_id}{n}", customer, at(n)) for n in range(3)],
        payments=[payment(pi_id, customer, at(0)), payment(f"{pi_id}b", customer, at(1))],
        refunds=[refund(uid("re"), pi_id, at(1))],
        subscriptions=[subscription(uid("sub"), customer, at(0))],
        receipts=[receipt(done, pi_id, customer), receipt(pending, f"{pi_id}b", customer)],
        pdfs={done: PDF_BYTES},
    )
    mine, service = user_token(user), ledger_token()
    cursor = (await get(ledger.url, "/v1/invoices", mine, {"limit": 1})).json()["next_cursor"]
    base = f"/v1/customers/{customer}"
    requests: list[tuple[str, str | None]] = [
        ("/v1/invoices", mine),
        ("/v1/invoices?limit=2", mine),
        (f"/v1/invoices?limit=1&cursor={cursor}", mine),
        ("/v1/invoices?status=paid&created%5Bgte%5D=2030-01-01T00:01:00Z", mine),
        ("/v1/invoices?limit=0", mine),
        ("/v1/invoices?cursor=bad", mine),
        ("/v1/invoices?nope=1", mine),
        (f"/v1/invoices/{in_id}0", mine),
        ("/v1/invoices/in_unknown", mine),
        ("/v1/payments", mine),
        ("/v1/subscriptions", mine),
        (f"/v1/receipts/{done}", mine),
        (f"/v1/receipts/{done}.pdf", mine),
        (f"/v1/receipts/{pending}.pdf", mine),  # 503: not rendered
        ("/v1/receipts/.pdf", mine),  # a number ".pdf": the JSON route, 404
        ("/v1/receipts/R-none.pdf", mine),
        (f"{base}/invoices", service),
        (f"{base}/invoices/{in_id}1", service),
        (f"{base}/payments?limit=1", service),
        (f"{base}/subscriptions", service),
        (f"{base}/receipts/{done}", service),
        (f"{base}/receipts/{done}.pdf", service),
        (f"{base}/invoices", mine),  # 403: no ledger scope
        (f"{base}/receipts/{done}.pdf", hs256(claims(scope=SERVICE_SCOPE))),  # 403
        ("/v1/invoices", "not.a.jwt"),
        ("/v1/payments", None),
        ("/v1/invoices/", mine),  # empty segment: left to FastAPI
        ("/v1/customers//invoices", service),
        ("/v1/invoices/x/extra", mine),
        ("/v1/customers/c", service),
        ("/v1/customers/c/refunds", service),
    ]
    settings = ledger.settings.model_copy(update={"gateway_port": free_port()})
    async with serve_gateway(settings, fast_paths=False):
        plain_url = f"http://127.0.0.1:{settings.gateway_port}"
        for path, token in requests:
            fast, plain = await get(ledger.url, path, token), await get(plain_url, path, token)
            assert (fast.status_code, fast.content) == (plain.status_code, plain.content), path
            for header in (
                "content-type",
                "content-disposition",
                "www-authenticate",
                "retry-after",
            ):
                assert fast.headers.get(header) == plain.headers.get(header), (path, header)
    statuses = {(await get(ledger.url, path, token)).status_code for path, token in requests}
    assert statuses == {200, 400, 401, 403, 404, 503}


async def test_requests_are_counted_by_route_template(ledger: Ledger) -> None:
    """The fast path names its route as FastAPI would: ids never become metric labels."""
    route = "/v1/customers/{customer_id}/receipts/{number}.pdf"

    def count() -> float:
        return metric("billing_http_request_seconds_count", route=route, method="GET", status="404")

    before = count()
    await get(ledger.url, f"/v1/customers/{uid('cus')}/receipts/R-1.pdf", ledger_token())
    assert count() == before + 1


async def test_openapi_documents_every_ledger_route(ledger: Ledger) -> None:
    spec = (await get(ledger.url, "/openapi.json")).json()
    lists = ["/invoices", "/payments", "/subscriptions"]
    ones = ["/invoices/{invoice_id}", "/receipts/{number}", "/receipts/{number}.pdf"]
    for prefix in ("/v1", "/v1/customers/{customer_id}"):
        for path in (prefix + p for p in lists + ones):
            operation = spec["paths"][path]["get"]
            assert operation["security"] == [{"HTTPBearer": []}], path
            expected = {"200", "401", "503"} | ({"403"} if "customers" in path else set())
            assert expected <= set(operation["responses"]), path
            names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            is_list = path.endswith(tuple(lists))
            assert names == (
                {"limit", "cursor", "status", "created[gte]", "created[lt]"} if is_list else set()
            ), path
            assert ("400" in operation["responses"]) is is_list, path
            assert ("404" in operation["responses"]) is not is_list, path
    pdf = spec["paths"]["/v1/receipts/{number}.pdf"]["get"]["responses"]["200"]
    assert list(pdf["content"]) == ["application/pdf"]
    page = spec["components"]["schemas"]["Page_Payment_"]
    assert set(page["properties"]) == {"data", "next_cursor"}


# -- the read views, an unmigrated database ------------------------------------------------


async def test_a_role_with_select_on_the_ledger_views_only_serves_every_route(
    kafka: Any, ledger_database: str
) -> None:
    """The gateway reads no table of the invoice worker: with a role that may read its
    read views and nothing else, every ledger route answers as it does for the owner."""
    user, customer = uid("user"), uid("cus")
    in_id, pi_id, number = uid("in"), uid("pi"), receipt_number()
    await seed(
        ledger_database,
        users={customer: user},
        invoices=[invoice(in_id, customer, at(0))],
        payments=[payment(pi_id, customer, at(0))],
        refunds=[refund(uid("re"), pi_id, at(1))],
        disputes=[dispute(uid("dp"), pi_id, at(2))],
        subscriptions=[subscription(uid("sub"), customer, at(0))],
        receipts=[receipt(number, pi_id, customer)],
        pdfs={number: PDF_BYTES},
    )
    async with reader_role(ledger_database, READ_VIEWS) as reader_url:
        refused = await asyncpg.connect(reader_url)
        try:  # the restriction is real: the tables themselves are closed to the role
            for table in ("ledger_invoices", "ledger_customers", "ledger_receipt_documents"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await refused.fetch(f"SELECT 1 FROM {table} LIMIT 1")
        finally:
            await refused.close()
        settings = gateway_settings(kafka, reader_url, **READ_API)
        async with serve_gateway(settings):
            url = f"http://127.0.0.1:{settings.gateway_port}"
            mine = [
                "/v1/invoices",
                f"/v1/invoices/{in_id}",
                "/v1/payments",
                "/v1/subscriptions",
                f"/v1/receipts/{number}",
                f"/v1/receipts/{number}.pdf",
            ]
            answers = [await get(url, path, user_token(user)) for path in mine]
            answers += [
                await get(url, path, ledger_token())
                for path in service_paths(customer, in_id, number)
            ]

    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    assert ids(answers[0]) == [in_id]
    assert [len(answers[2].json()["data"][0][k]) for k in ("refunds", "disputes")] == [1, 1]
    assert answers[5].content == answers[11].content == PDF_BYTES


async def test_a_database_without_the_ledger_views_answers_503_naming_the_schema(
    kafka: Any, create_database: Any
) -> None:
    """A gateway started before `billing-fleet migrate` applied the invoice worker's views."""
    bare = await create_database(migrated=False)
    settings = gateway_settings(kafka, bare, **READ_API)
    async with serve_gateway(settings):
        url = f"http://127.0.0.1:{settings.gateway_port}"
        answers = [
            await get(url, path, user_token("u"))
            for path in ("/v1/invoices", "/v1/invoices/in_1", "/v1/receipts/R-1.pdf")
        ]
    for response in answers:
        assert assert_problem(response, 503)["detail"] == "database schema not migrated"
        assert response.headers["retry-after"] == "5"
