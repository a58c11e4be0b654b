"""Receipts on real PostgreSQL: exactly one per succeeded payment, numbered without gaps
per (account, mode, prefix, year), never a number burnt by a redelivery or shared by concurrent
transactions, a Connect account's own sequence, a refund leaving the number; the
receipt.issued event and the document delivery of each."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from contracts import Customer, CustomerEvent, PaymentEvent, ReceiptIssuedEvent, event_id_for
from tests.conftest import CreateDatabase
from tests.invoice_support import (
    NOW,
    apply,
    at,
    document_keys,
    invoice,
    invoice_event,
    invoice_spec,
    ledger_events,
    payment,
    payment_event,
    refund,
    refund_event,
    source,
    types,
)
from workers.invoice.receipts import DOCUMENT_CHANNEL, document_delivery

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CUSTOMER = "cus_receipts"


def succeeded(
    payment_id: str,
    *,
    seconds: int = 1,
    card: bool = True,
    account: str | None = None,
    customer_id: str | None = CUSTOMER,
    livemode: bool = False,
) -> PaymentEvent:
    return payment_event(
        "payment.succeeded",
        payment(payment_id, charge=f"ch_{payment_id}", card=card),
        customer_id=customer_id,
        occurred_at=at(f"2026-02-01T10:00:{seconds:02d}"),
        account=account,
        livemode=livemode,
    )


async def numbers(conn: asyncpg.Connection) -> list[tuple[str, str, int, int]]:
    rows = await conn.fetch(
        "SELECT number, payment_id, year, sequence FROM ledger_receipts"
        " ORDER BY account, livemode, prefix, year, sequence"
    )
    return [(row["number"], row["payment_id"], row["year"], row["sequence"]) for row in rows]


async def test_one_receipt_per_succeeded_payment_and_a_redelivery_issues_nothing(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = invoice_spec()
    first_intent = succeeded("pi_r1", card=False)
    first_charge = succeeded("pi_r1", seconds=2)
    second = succeeded("pi_r2", seconds=3)
    failed = payment_event(
        "payment.failed", payment("pi_r3", status="requires_payment_method", card=False),
        customer_id=CUSTOMER, occurred_at=at("2026-02-01T10:00:04"),
    )  # fmt: skip

    assert types(await apply(ledger_conn, spec, first_intent)) == [
        "payment.succeeded", "receipt.issued",
    ]  # fmt: skip
    assert types(await apply(ledger_conn, spec, first_charge)) == ["payment.updated"]
    assert await apply(ledger_conn, spec, first_charge) is None
    assert types(await apply(ledger_conn, spec, second)) == [
        "payment.succeeded", "receipt.issued",
    ]  # fmt: skip
    assert types(await apply(ledger_conn, spec, failed)) == ["payment.failed"]

    assert await numbers(ledger_conn) == [
        ("R-TEST-2026-000001", "pi_r1", 2026, 1),
        ("R-TEST-2026-000002", "pi_r2", 2026, 2),
    ]
    counter = await ledger_conn.fetchval(
        "SELECT last_number FROM ledger_receipt_counters WHERE account = '' AND prefix = 'R'"
    )
    assert counter == 2
    assert await document_keys(ledger_conn) == [
        "receipt-pdf:R-TEST-2026-000001", "receipt-pdf:R-TEST-2026-000002",
    ]  # fmt: skip
    payload = await ledger_conn.fetchval(
        "SELECT payload FROM deliveries WHERE idempotency_key = $1",
        "receipt-pdf:R-TEST-2026-000001",
    )
    assert payload == b"R-TEST-2026-000001"

    # The handler applied again (processed_events cleared, a replay) issues nothing either.
    handler = spec.subscriptions[0].handle
    assert await handler(ledger_conn, first_charge) == []
    assert len(await numbers(ledger_conn)) == 2


async def test_a_connect_account_and_a_new_prefix_have_their_own_sequences(
    ledger_conn: asyncpg.Connection,
) -> None:
    await apply(ledger_conn, invoice_spec(), succeeded("pi_p1"))
    await apply(ledger_conn, invoice_spec(), succeeded("pi_c1", seconds=2, account="acct_1Shop"))
    await apply(ledger_conn, invoice_spec(), succeeded("pi_c2", seconds=3, account="acct_1Shop"))
    await apply(ledger_conn, invoice_spec("Q"), succeeded("pi_q1", seconds=4))

    assert await numbers(ledger_conn) == [
        ("Q-TEST-2026-000001", "pi_q1", 2026, 1),
        ("R-TEST-2026-000001", "pi_p1", 2026, 1),
        ("R-acct_1Shop-TEST-2026-000001", "pi_c1", 2026, 1),
        ("R-acct_1Shop-TEST-2026-000002", "pi_c2", 2026, 2),
    ]


async def test_test_mode_payments_take_no_live_number(ledger_conn: asyncpg.Connection) -> None:
    """Live and test payments of one account count apart: a test payment between two live
    ones leaves the live numbers gapless, and shows it is a test in its number."""
    spec = invoice_spec()
    for event in (
        succeeded("pi_live1", livemode=True),
        succeeded("pi_test1", seconds=2),
        succeeded("pi_live2", seconds=3, livemode=True),
        succeeded("pi_shop1", seconds=4, account="acct_1Shop", livemode=True),
        succeeded("pi_shop_test1", seconds=5, account="acct_1Shop"),
    ):
        await apply(ledger_conn, spec, event)

    assert await numbers(ledger_conn) == [
        ("R-TEST-2026-000001", "pi_test1", 2026, 1),
        ("R-2026-000001", "pi_live1", 2026, 1),
        ("R-2026-000002", "pi_live2", 2026, 2),
        ("R-acct_1Shop-TEST-2026-000001", "pi_shop_test1", 2026, 1),
        ("R-acct_1Shop-2026-000001", "pi_shop1", 2026, 1),
    ]
    counters = await ledger_conn.fetch(
        "SELECT account, livemode, last_number FROM ledger_receipt_counters"
        " ORDER BY account, livemode"
    )
    assert [tuple(c) for c in counters] == [
        ("", False, 1), ("", True, 2), ("acct_1Shop", False, 1), ("acct_1Shop", True, 1),
    ]  # fmt: skip


async def test_the_year_is_when_the_payment_succeeded(ledger_conn: asyncpg.Connection) -> None:
    """Its charge created on New Year's Eve, the event seen in January: a receipt of the old
    year. An intent created in December, its charge unknown to the event that says it
    succeeded in January: of the new year (not the intent's creation)."""
    spec = invoice_spec()
    charged = payment_event(
        "payment.succeeded",
        payment("pi_nye", charge="ch_nye", of_charge=True,
                charge_created_at=at("2025-12-31T23:59:59")),
        customer_id=CUSTOMER, occurred_at=at("2026-01-01T00:00:01"),
    )  # fmt: skip
    intent = payment_event(
        "payment.succeeded",
        payment("pi_jan", charge="ch_jan", card=False, created_at=at("2025-12-20T10:00:00")),
        customer_id=CUSTOMER, occurred_at=at("2026-01-01T00:00:05"),
    )  # fmt: skip

    issued = []
    for event in (charged, intent):
        out = await apply(ledger_conn, spec, event)
        issued += [e.receipt for e in ledger_events(out) if isinstance(e, ReceiptIssuedEvent)]

    assert [(r.number, r.paid_at) for r in issued] == [
        ("R-TEST-2025-000001", at("2025-12-31T23:59:59")),
        ("R-TEST-2026-000001", at("2026-01-01T00:00:05")),
    ]
    assert await numbers(ledger_conn) == [
        ("R-TEST-2025-000001", "pi_nye", 2025, 1), ("R-TEST-2026-000001", "pi_jan", 2026, 1),
    ]  # fmt: skip
    stored = await ledger_conn.fetch(
        "SELECT payment_id, created_at FROM ledger_payments ORDER BY payment_id"
    )
    # The charge's event gave no creation: its own time stands in until the intent's comes.
    assert [tuple(r) for r in stored] == [
        ("pi_jan", at("2025-12-20T10:00:00")), ("pi_nye", at("2026-01-01T00:00:01")),
    ]  # fmt: skip


async def test_a_refund_leaves_the_receipt_and_its_number(ledger_conn: asyncpg.Connection) -> None:
    spec = invoice_spec()
    await apply(ledger_conn, spec, succeeded("pi_keep"))
    refunded = payment_event(
        "payment.refunded", payment("pi_keep", charge="ch_pi_keep", refunded=2000),
        customer_id=CUSTOMER, occurred_at=at("2026-02-05T00:00:00"),
    )  # fmt: skip
    assert types(await apply(ledger_conn, spec, refunded)) == ["payment.refunded"]
    await apply(
        ledger_conn,
        spec,
        refund_event("refund.created", refund("re_keep", charge="ch_pi_keep", amount=2000),
                     customer_id=None, occurred_at=at("2026-02-05T00:00:01")),
    )  # fmt: skip
    await apply(ledger_conn, spec, succeeded("pi_next", seconds=9))

    assert await numbers(ledger_conn) == [
        ("R-TEST-2026-000001", "pi_keep", 2026, 1),
        ("R-TEST-2026-000002", "pi_next", 2026, 2),
    ]
    view = await ledger_conn.fetchrow(
        "SELECT amount, amount_refunded, pdf_ready FROM read_v1_receipts"
        " WHERE number = 'R-TEST-2026-000001'"
    )
    assert view is not None and tuple(view) == (2000, 2000, False)


async def test_receipt_issued_carries_what_a_receipt_mail_needs(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = invoice_spec()
    stripe_id = "evt_receipt_customer"
    await apply(
        ledger_conn,
        spec,
        CustomerEvent(
            id=event_id_for(stripe_id), type="customer.created",
            occurred_at=at("2026-02-01T09:00:00"), source=source(stripe_id),
            customer_id=CUSTOMER,
            customer=Customer(id=CUSTOMER, email="ada@example.test", name="Ada Lovelace",
                              user_id="user_ada", metadata={"user_id": "user_ada"},
                              deleted=False),
        ),
    )  # fmt: skip
    paid = invoice_event(
        "invoice.paid", invoice("in_mail", status="paid", intent="pi_mail", number="INV-0042"),
        customer_id=CUSTOMER, occurred_at=at("2026-02-01T10:00:00"),
    )  # fmt: skip
    await apply(ledger_conn, spec, paid)
    out = await apply(ledger_conn, spec, succeeded("pi_mail", seconds=5))

    [issued] = [e for e in ledger_events(out) if isinstance(e, ReceiptIssuedEvent)]
    receipt = issued.receipt
    assert (receipt.number, receipt.payment_id, receipt.invoice_id, receipt.invoice_number) == (
        "R-TEST-2026-000001", "pi_mail", "in_mail", "INV-0042",
    )  # fmt: skip
    assert (receipt.customer_email, receipt.customer_name) == ("ada@example.test", "Ada Lovelace")
    assert (receipt.amount, receipt.currency, receipt.issued_at) == (2000, "eur", NOW)
    assert [line.description for line in receipt.lines] == ["Pro plan"]
    assert receipt.hosted_invoice_url == "https://invoice.stripe.test/in_mail"
    assert (receipt.card_brand, receipt.card_last4) == ("visa", "4242")
    assert issued.customer_id == CUSTOMER and issued.caused_by.startswith("evt_")

    delivery = document_delivery(receipt.number)
    assert (delivery.channel, delivery.destination, delivery.idempotency_key) == (
        DOCUMENT_CHANNEL, "receipt-documents", "receipt-pdf:R-TEST-2026-000001",
    )  # fmt: skip
    assert (delivery.payload, dict(delivery.metadata)) == (
        b"R-TEST-2026-000001", {"number": "R-TEST-2026-000001"},
    )  # fmt: skip


async def test_concurrent_transactions_never_share_nor_burn_a_number(
    create_database: CreateDatabase,
) -> None:
    """Twelve payments, each reported twice (intent and charge events) on connections of
    their own, all at once and committed: each payment one receipt, numbers 1..12."""
    url = await create_database(migrated=True)
    spec = invoice_spec()
    events = [
        event
        for n in range(12)
        for event in (
            succeeded(f"pi_cc{n}", seconds=n, card=False, customer_id=f"cus_cc{n % 3}"),
            succeeded(f"pi_cc{n}", seconds=n + 1, customer_id=f"cus_cc{n % 3}"),
        )
    ]

    async def one(event: PaymentEvent) -> None:
        conn = await asyncpg.connect(url)
        try:
            for _ in range(10):  # a deadlock or serialization failure is retried, as an outage
                try:
                    await apply(conn, spec, event)
                    return
                except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                    continue
            raise AssertionError("never applied")
        finally:
            await conn.close()

    async with asyncio.timeout(60):
        await asyncio.gather(*(one(event) for event in events))

    conn = await asyncpg.connect(url)
    try:
        found = await numbers(conn)
        assert sorted(sequence for *_, sequence in found) == list(range(1, 13))
        assert sorted(payment_id for _, payment_id, *_ in found) == sorted(
            f"pi_cc{n}" for n in range(12)
        )
        assert await conn.fetchval("SELECT last_number FROM ledger_receipt_counters") == 12
        assert len(await document_keys(conn)) == 12
    finally:
        await conn.close()
