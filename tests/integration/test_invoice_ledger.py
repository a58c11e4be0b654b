"""The ledger's rules on real PostgreSQL, through the runtime's per-event path: monotone
states and newest-wins, refunds and disputes that come before their payment, the
invoice-payment link in either order, card details, growing amounts, customers."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import pytest

from contracts import Customer, CustomerEvent, event_id_for
from contracts.events import CustomerEventType
from tests.invoice_support import (
    apply,
    at,
    checkout_event,
    dispute,
    dispute_event,
    invoice,
    invoice_event,
    ledger_events,
    payment,
    payment_event,
    refund,
    refund_event,
    source,
    types,
)
from tests.invoice_support import invoice_spec as spec_of

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CUSTOMER = "cus_ledger"
T0 = at("2026-02-01T10:00:00")


def later(seconds: int) -> datetime:
    return at(f"2026-02-01T10:00:{seconds:02d}")


async def row(conn: asyncpg.Connection, table: str, key: str, value: str) -> asyncpg.Record:
    found = await conn.fetchrow(f"SELECT * FROM {table} WHERE {key} = $1", value)
    assert found is not None, f"no {table} row {value}"
    return found


# -- invoices: monotone states, newest wins ------------------------------------------------


async def test_a_paid_invoice_stays_paid_when_a_late_open_event_arrives(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    paid = invoice_event(
        "invoice.paid", invoice("in_1", status="paid", number="INV-1"), customer_id=CUSTOMER,
        occurred_at=at("2026-02-01T10:00:05"),
    )  # fmt: skip
    late_open = invoice_event(
        "invoice.finalized", invoice("in_1", status="open", number="INV-1"),
        customer_id=CUSTOMER, occurred_at=at("2026-02-01T10:00:09"),
    )  # fmt: skip

    assert types(await apply(ledger_conn, spec, paid)) == ["invoice.paid"]
    assert await apply(ledger_conn, spec, late_open) == []

    stored = await row(ledger_conn, "ledger_invoices", "invoice_id", "in_1")
    assert (stored["status"], stored["status_rank"], stored["event_id"]) == (
        "paid", 3, paid.source.stripe_event_id,
    )  # fmt: skip
    assert stored["amount_paid"] == 2000


async def test_a_void_invoice_stays_void(ledger_conn: asyncpg.Connection) -> None:
    spec = spec_of()
    voided = invoice_event(
        "invoice.voided", invoice("in_2", status="void"), customer_id=CUSTOMER, occurred_at=T0
    )
    later_day = at("2026-02-02T00:00:00")
    after = [
        invoice_event("invoice.finalized", invoice("in_2", status="open"),
                      customer_id=CUSTOMER, occurred_at=later_day),
        invoice_event("invoice.marked_uncollectible", invoice("in_2", status="uncollectible"),
                      customer_id=CUSTOMER, occurred_at=later_day),
    ]  # fmt: skip

    assert types(await apply(ledger_conn, spec, voided)) == ["invoice.voided"]
    for event in after:
        assert await apply(ledger_conn, spec, event) == []
    assert (await row(ledger_conn, "ledger_invoices", "invoice_id", "in_2"))["status"] == "void"


async def test_within_a_status_the_newest_event_wins_whatever_the_order(
    ledger_conn: asyncpg.Connection,
) -> None:
    """Two payment failures of an open invoice: the later attempt's snapshot stays."""
    first = invoice("in_3", status="open").model_copy(update={"attempt_count": 1})
    second = invoice("in_3", status="open").model_copy(update={"attempt_count": 2})
    newer = invoice_event(
        "invoice.payment_failed", second, customer_id=CUSTOMER, occurred_at=later(30)
    )
    older = invoice_event(
        "invoice.payment_failed", first, customer_id=CUSTOMER, occurred_at=later(10)
    )
    spec = spec_of()

    assert types(await apply(ledger_conn, spec, newer)) == ["invoice.payment_failed"]
    assert await apply(ledger_conn, spec, older) == []
    assert (await row(ledger_conn, "ledger_invoices", "invoice_id", "in_3"))["attempt_count"] == 2


async def test_same_second_events_order_by_precedence(ledger_conn: asyncpg.Connection) -> None:
    """In one second, payment.refunded outranks payment.succeeded (rules.EVENT_RANK), so
    the refunded snapshot stays although the succeeded event came last."""
    spec = spec_of()
    refunded = payment_event(
        "payment.refunded", payment("pi_same", charge="ch_same", refunded=700),
        customer_id=CUSTOMER, occurred_at=later(1), event_id="evt_b",
    )  # fmt: skip
    succeeded = payment_event(
        "payment.succeeded", payment("pi_same", charge="ch_same"), customer_id=CUSTOMER,
        occurred_at=later(1), event_id="evt_z",  # a greater id: only precedence puts it first
    )  # fmt: skip
    await apply(ledger_conn, spec, refunded)
    await apply(ledger_conn, spec, succeeded)
    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_same")
    assert (stored["event_id"], stored["event_rank"], stored["amount_refunded"]) == (
        "evt_b", 2, 700,
    )  # fmt: skip


# -- payments --------------------------------------------------------------------------------


async def test_a_failed_event_gives_failed_and_a_succeeded_payment_never_fails(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    failed = payment_event(
        "payment.failed", payment("pi_f", status="requires_payment_method", card=False),
        customer_id=CUSTOMER, occurred_at=later(1),
    )  # fmt: skip
    succeeded = payment_event(
        "payment.succeeded", payment("pi_f", charge="ch_f"), customer_id=CUSTOMER,
        occurred_at=later(5),
    )  # fmt: skip
    late_failure = payment_event(
        "payment.failed", payment("pi_f", status="requires_payment_method", card=False),
        customer_id=CUSTOMER, occurred_at=later(9),
    )  # fmt: skip

    assert types(await apply(ledger_conn, spec, failed)) == ["payment.failed"]
    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_f")
    assert (stored["status"], stored["status_rank"]) == ("failed", 1)
    assert types(await apply(ledger_conn, spec, succeeded)) == [
        "payment.succeeded", "receipt.issued",
    ]  # fmt: skip
    assert await apply(ledger_conn, spec, late_failure) == []
    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_f")
    assert (stored["status"], stored["failure_code"]) == ("succeeded", None)
    assert stored["succeeded_at"] == later(5)


@pytest.mark.parametrize("charge_first", [True, False])
async def test_card_details_come_from_the_newest_event_that_carried_the_charge(
    ledger_conn: asyncpg.Connection, charge_first: bool
) -> None:
    """payment_intent.succeeded may come later and without the charge's details: they stay."""
    charge = payment_event(
        "payment.succeeded", payment("pi_card", charge="ch_card"), customer_id=CUSTOMER,
        occurred_at=later(2),
    )  # fmt: skip
    intent = payment_event(
        "payment.succeeded", payment("pi_card", charge="ch_card", card=False),
        customer_id=CUSTOMER, occurred_at=later(3),
    )  # fmt: skip
    spec = spec_of()
    for event in (charge, intent) if charge_first else (intent, charge):
        await apply(ledger_conn, spec, event)
    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_card")
    assert (stored["card_brand"], stored["card_last4"], stored["payment_method_type"]) == (
        "visa", "4242", "card",
    )  # fmt: skip
    assert (stored["event_id"], stored["charge_event_id"]) == (
        intent.source.stripe_event_id, charge.source.stripe_event_id,
    )  # fmt: skip


async def test_amount_refunded_is_the_newest_charge_s_and_created_at_is_the_earliest(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    more = payment_event(
        "payment.refunded",
        payment("pi_r", charge="ch_r", refunded=1500, created_at=at("2026-02-01T09:00:00")),
        customer_id=CUSTOMER, occurred_at=later(20),
    )  # fmt: skip
    less = payment_event(
        "payment.refunded",
        payment("pi_r", charge="ch_r", refunded=500, created_at=at("2026-02-01T08:00:00")),
        customer_id=CUSTOMER, occurred_at=later(10),
    )  # fmt: skip
    # A refund of 500 failed: Stripe's next charge event says 1000.
    failed_refund = payment_event(
        "payment.refunded", payment("pi_r", charge="ch_r", refunded=1000, of_charge=True),
        customer_id=CUSTOMER, occurred_at=later(30),
    )  # fmt: skip
    # The intent's own event, its charge by id only: says 0, which counts for nothing.
    intent = payment_event(
        "payment.succeeded",
        payment("pi_r", charge="ch_r", card=False, created_at=at("2026-02-01T09:00:00")),
        customer_id=CUSTOMER, occurred_at=later(40),
    )  # fmt: skip
    assert types(await apply(ledger_conn, spec, more)) == [
        "payment.succeeded", "payment.refunded", "receipt.issued",
    ]  # fmt: skip
    assert types(await apply(ledger_conn, spec, less)) == ["payment.updated"]  # created_at
    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_r")
    assert stored["amount_refunded"] == 1500
    assert stored["created_at"] == at("2026-02-01T08:00:00")
    assert stored["event_id"] == more.source.stripe_event_id
    assert types(await apply(ledger_conn, spec, failed_refund)) == ["payment.updated"]
    assert types(await apply(ledger_conn, spec, intent)) == []  # its snapshot: the same
    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_r")
    assert (stored["amount_refunded"], stored["charge_event_id"]) == (
        1000, failed_refund.source.stripe_event_id,
    )  # fmt: skip


@pytest.mark.parametrize("succeeded_first", [True, False])
async def test_the_charge_is_the_latest_attempt_s_in_either_order(
    ledger_conn: asyncpg.Connection, succeeded_first: bool
) -> None:
    """A declined first attempt (its charge's details on the intent's event) and the
    second attempt's charge: the payment names the second, with its card."""
    declined = payment_event(
        "payment.failed", payment("pi_two", status="requires_payment_method", charge="ch_1"),
        customer_id=CUSTOMER, occurred_at=later(2),
    )  # fmt: skip
    retried = payment_event(
        "payment.succeeded",
        payment("pi_two", charge="ch_2", of_charge=True).model_copy(update={"card_last4": "1881"}),
        customer_id=CUSTOMER, occurred_at=later(9),
    )  # fmt: skip
    spec = spec_of()
    for event in (retried, declined) if succeeded_first else (declined, retried):
        await apply(ledger_conn, spec, event)
    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_two")
    assert (stored["charge_id"], stored["card_last4"], stored["status"]) == (
        "ch_2", "1881", "succeeded",
    )  # fmt: skip
    assert (
        await ledger_conn.fetchval("SELECT count(*) FROM ledger_payments WHERE charge_id = 'ch_1'")
        == 0
    )


@pytest.mark.parametrize("invoice_first", [True, False])
async def test_a_payment_gets_the_invoice_that_names_its_intent_in_either_order(
    ledger_conn: asyncpg.Connection, invoice_first: bool
) -> None:
    paid = invoice_event(
        "invoice.paid", invoice("in_link", status="paid", intent="pi_link"),
        customer_id=CUSTOMER, occurred_at=later(4),
    )  # fmt: skip
    charge = payment_event(
        "payment.succeeded", payment("pi_link", charge="ch_link"), customer_id=CUSTOMER,
        occurred_at=later(3),
    )  # fmt: skip
    spec = spec_of()
    outs = [
        await apply(ledger_conn, spec, e)
        for e in ((paid, charge) if invoice_first else (charge, paid))
    ]

    stored = await row(ledger_conn, "ledger_payments", "payment_id", "pi_link")
    assert stored["invoice_id"] == "in_link"
    if invoice_first:
        assert types(outs[1]) == ["payment.succeeded", "receipt.issued"]
        receipt = ledger_events(outs[1])[-1]
    else:  # the invoice's event also changed the payment
        assert types(outs[1]) == ["invoice.paid", "payment.updated"]
        receipt = ledger_events(outs[0])[-1]
    assert receipt.type == "receipt.issued"
    assert receipt.receipt.invoice_id == ("in_link" if invoice_first else None)


# -- refunds and disputes before their payment -------------------------------------------------


async def test_a_refund_before_its_payment_is_kept_and_attached_when_the_payment_arrives(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    early = refund_event(
        "refund.created", refund("re_early", charge="ch_late", status="pending"),
        customer_id=None, occurred_at=later(1),
    )  # fmt: skip
    assert types(await apply(ledger_conn, spec, early)) == ["refund.created"]
    stored = await row(ledger_conn, "ledger_refunds", "refund_id", "re_early")
    assert (stored["payment_id"], stored["customer_id"], stored["status"]) == (
        None, None, "pending",
    )  # fmt: skip

    arrives = payment_event(
        "payment.succeeded", payment("pi_late", charge="ch_late"), customer_id=CUSTOMER,
        occurred_at=later(2),
    )  # fmt: skip
    out = await apply(ledger_conn, spec, arrives)
    assert types(out) == ["payment.succeeded", "refund.updated", "receipt.issued"]
    attached = ledger_events(out)[1]
    assert attached.type == "refund.updated"
    assert (attached.refund.payment_id, attached.refund.customer_id) == ("pi_late", CUSTOMER)
    stored = await row(ledger_conn, "ledger_refunds", "refund_id", "re_early")
    assert (stored["payment_id"], stored["customer_id"]) == ("pi_late", CUSTOMER)

    # Its own later update keeps the attachment (it names only the charge, no customer).
    done = refund_event(
        "refund.updated", refund("re_early", charge="ch_late"), customer_id=None,
        occurred_at=later(3),
    )  # fmt: skip
    assert types(await apply(ledger_conn, spec, done)) == ["refund.updated"]
    stored = await row(ledger_conn, "ledger_refunds", "refund_id", "re_early")
    assert (stored["payment_id"], stored["customer_id"], stored["status"]) == (
        "pi_late", CUSTOMER, "succeeded",
    )  # fmt: skip


async def test_a_refund_after_its_payment_is_attached_at_once(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    await apply(
        ledger_conn,
        spec,
        payment_event(
            "payment.succeeded", payment("pi_a", charge="ch_a"), customer_id=CUSTOMER,
            occurred_at=later(1),
        ),
    )  # fmt: skip
    out = await apply(
        ledger_conn,
        spec,
        refund_event("refund.created", refund("re_a", charge=None, intent="pi_a"),
                     customer_id=None, occurred_at=later(2)),
    )  # fmt: skip
    [created] = ledger_events(out)
    assert created.type == "refund.created"
    assert (created.refund.payment_id, created.customer_id) == ("pi_a", CUSTOMER)


async def test_a_dispute_before_its_payment_is_attached_and_its_funds_only_grow(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    opened = dispute_event(
        "dispute.opened", dispute("dp_1", charge="ch_d"), customer_id=None,
        occurred_at=later(1),
    )  # fmt: skip
    withdrawn = dispute_event(
        "dispute.updated", dispute("dp_1", charge="ch_d", withdrawn=2000), customer_id=None,
        occurred_at=later(2),
    )  # fmt: skip
    won = dispute_event(
        "dispute.closed", dispute("dp_1", charge="ch_d", status="won", reinstated=2000),
        customer_id=None, occurred_at=later(5),
    )  # fmt: skip
    assert types(await apply(ledger_conn, spec, won)) == ["dispute.closed"]
    assert await apply(ledger_conn, spec, opened) == []  # older and open: nothing changes
    # Older, but it knows the withdrawal the closing event did not carry.
    assert types(await apply(ledger_conn, spec, withdrawn)) == ["dispute.updated"]
    stored = await row(ledger_conn, "ledger_disputes", "dispute_id", "dp_1")
    assert (stored["status"], stored["amount_withdrawn"], stored["amount_reinstated"]) == (
        "won", 2000, 2000,
    )  # fmt: skip
    assert stored["payment_id"] is None

    out = await apply(
        ledger_conn,
        spec,
        payment_event(
            "payment.succeeded", payment("pi_d", charge="ch_d"), customer_id=CUSTOMER,
            occurred_at=later(0),
        ),
    )  # fmt: skip
    assert types(out) == ["payment.succeeded", "dispute.updated", "receipt.issued"]
    stored = await row(ledger_conn, "ledger_disputes", "dispute_id", "dp_1")
    assert (stored["payment_id"], stored["customer_id"]) == ("pi_d", CUSTOMER)
    view = await ledger_conn.fetchrow(
        "SELECT disputes, refunds FROM read_v1_payments WHERE payment_id = 'pi_d'"
    )
    assert view is not None and '"dp_1"' in view["disputes"]


async def test_a_charge_refunded_upserts_the_refunds_it_lists(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    pending = refund_event(
        "refund.created", refund("re_l1", charge="ch_l", status="pending"), customer_id=None,
        occurred_at=later(1),
    )  # fmt: skip
    await apply(ledger_conn, spec, pending)
    listed = payment(
        "pi_l",
        charge="ch_l",
        refunded=800,
        refunds=[
            refund("re_l1", charge="ch_l", amount=500),
            refund("re_l2", charge="ch_l", amount=300),
        ],
    )
    out = await apply(
        ledger_conn,
        spec,
        payment_event("payment.refunded", listed, customer_id=CUSTOMER, occurred_at=later(4)),
    )
    assert types(out) == [
        "payment.succeeded", "payment.refunded", "refund.updated", "refund.created",
        "receipt.issued",
    ]  # fmt: skip
    rows = await ledger_conn.fetch(
        "SELECT refund_id, payment_id, customer_id, status, amount FROM ledger_refunds"
        " WHERE charge_id = 'ch_l' ORDER BY refund_id"
    )
    assert [tuple(r) for r in rows] == [
        ("re_l1", "pi_l", CUSTOMER, "succeeded", 500),
        ("re_l2", "pi_l", CUSTOMER, "succeeded", 300),
    ]


# -- customers ---------------------------------------------------------------------------------


def customer_event(
    event_type: CustomerEventType,
    *,
    user: str | None,
    email: str | None,
    seconds: int,
    stub: bool = False,
) -> CustomerEvent:
    stripe_id = f"evt_cus_{event_type}_{seconds}"
    return CustomerEvent(
        id=event_id_for(stripe_id),
        type=event_type,
        occurred_at=later(seconds),
        source=source(stripe_id),
        customer_id=CUSTOMER,
        customer=Customer(
            id=CUSTOMER,
            email=None if stub else email,
            name=None if stub else "Ada",
            user_id=user,
            metadata={"user_id": user} if user else {},
            deleted=event_type == "customer.deleted",
        ),
    )


async def test_a_customer_maps_its_user_and_deletion_erases_its_contact(
    ledger_conn: asyncpg.Connection,
) -> None:
    spec = spec_of()
    await apply(ledger_conn, spec, checkout_event(CUSTOMER, "user_checkout", occurred_at=later(1)))
    stored = await row(ledger_conn, "ledger_customers", "customer_id", CUSTOMER)
    assert (stored["user_id"], stored["checkout_user_id"]) == ("user_checkout", "user_checkout")

    updated = customer_event("customer.updated", user="user_meta", email="a@x.test", seconds=5)
    older = customer_event("customer.created", user="user_old", email="old@x.test", seconds=2)
    assert await apply(ledger_conn, spec, updated) == []  # customers emit nothing
    await apply(ledger_conn, spec, older)
    stored = await row(ledger_conn, "ledger_customers", "customer_id", CUSTOMER)
    assert (stored["user_id"], stored["email"], stored["name"]) == ("user_meta", "a@x.test", "Ada")

    stub = customer_event("customer.deleted", user=None, email=None, seconds=9, stub=True)
    await apply(ledger_conn, spec, stub)
    stored = await row(ledger_conn, "ledger_customers", "customer_id", CUSTOMER)
    assert (stored["deleted"], stored["email"], stored["name"]) == (True, None, None)
    assert stored["user_id"] == "user_meta"  # the stub says nothing about the user

    # An event older than the deletion, arriving after it, brings nothing back.
    await apply(
        ledger_conn,
        spec,
        customer_event("customer.updated", user="user_meta", email="b@x.test", seconds=7),
    )
    stored = await row(ledger_conn, "ledger_customers", "customer_id", CUSTOMER)
    assert (stored["deleted"], stored["email"]) == (True, None)
    view = await ledger_conn.fetchrow(
        "SELECT user_id FROM read_v1_ledger_customers WHERE customer_id = $1", CUSTOMER
    )
    assert view is not None and view["user_id"] == "user_meta"


async def test_any_payment_event_may_list_refunds(ledger_conn: asyncpg.Connection) -> None:
    """A charge.succeeded (or an intent with its charge expanded) may carry the charge's
    refund list too: its refunds are kept like a charge.refunded's."""
    listed = payment("pi_any", charge="ch_any", refunds=[refund("re_any", charge="ch_any")])
    out = await apply(
        ledger_conn,
        spec_of(),
        payment_event("payment.succeeded", listed, customer_id=CUSTOMER, occurred_at=later(1)),
    )
    assert types(out) == ["payment.succeeded", "refund.created", "receipt.issued"]
    stored = await row(ledger_conn, "ledger_refunds", "refund_id", "re_any")
    assert (stored["payment_id"], stored["event_rank"]) == ("pi_any", 1)
