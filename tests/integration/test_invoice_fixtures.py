"""Every real Stripe fixture of an invoice, payment, refund, dispute or subscription, as the
gateway normalizes it, goes through the invoice worker's handler (the runtime's per-event
path, real PostgreSQL) and lands as its ledger row; what it emits is valid against the
committed ``invoices.v1`` schema."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest
from jsonschema import Draft202012Validator
from pydantic_core import to_json

from api_gateway.normalize import HANDLED_TYPES, normalize
from contracts import (
    INVOICES,
    Dispute,
    DisputeEvent,
    Invoice,
    InvoiceEvent,
    InvoicePayment,
    InvoicePaymentEvent,
    Payment,
    PaymentEvent,
    Refund,
    RefundEvent,
    Subscription,
    SubscriptionEvent,
    json_schema,
    parse_ledger_event,
)
from tests.invoice_support import apply, invoice_spec
from tests.stripe_fixtures import fixture_files

pytestmark = pytest.mark.integration

LEDGER_KINDS = (
    InvoiceEvent,
    PaymentEvent,
    RefundEvent,
    DisputeEvent,
    SubscriptionEvent,
    InvoicePaymentEvent,
)
ROW_OF: dict[type, tuple[str, str]] = {
    InvoiceEvent: ("ledger_invoices", "invoice_id"),
    PaymentEvent: ("ledger_payments", "payment_id"),
    RefundEvent: ("ledger_refunds", "refund_id"),
    DisputeEvent: ("ledger_disputes", "dispute_id"),
    SubscriptionEvent: ("ledger_subscriptions", "subscription_id"),
    InvoicePaymentEvent: ("ledger_invoice_payments", "invoice_payment_id"),
}


def ledger_fixtures() -> list[Path]:
    found = []
    for path in fixture_files():
        raw = json.loads(path.read_text())
        if raw["type"] in HANDLED_TYPES and isinstance(normalize(raw), LEDGER_KINDS):
            found.append(path)
    return found


EVENTS = {path.stem: normalize(json.loads(path.read_text())) for path in ledger_fixtures()}


LedgerObject = Invoice | Payment | Refund | Dispute | Subscription | InvoicePayment


def _payload(
    event: InvoiceEvent
    | PaymentEvent
    | RefundEvent
    | DisputeEvent
    | SubscriptionEvent
    | InvoicePaymentEvent,
) -> LedgerObject:
    match event:
        case InvoiceEvent():
            return event.invoice
        case PaymentEvent():
            return event.payment
        case RefundEvent():
            return event.refund
        case DisputeEvent():
            return event.dispute
        case SubscriptionEvent():
            return event.subscription
        case InvoicePaymentEvent():
            return event.invoice_payment


def test_the_fixtures_cover_every_ledger_family() -> None:
    kinds = {type(event).__name__ for event in EVENTS.values()}
    # No refund.* fixture exists (Stripe's refund events are new): they are built from the
    # contract models in test_invoice_ledger; charge.refunded lists refunds here.
    assert kinds == {
        "InvoiceEvent",
        "PaymentEvent",
        "DisputeEvent",
        "SubscriptionEvent",
        "InvoicePaymentEvent",
    }


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("path", ledger_fixtures(), ids=lambda p: p.stem)
async def test_each_fixture_lands_as_its_ledger_row(
    ledger_conn: asyncpg.Connection, path: Path
) -> None:
    event = EVENTS[path.stem]
    assert isinstance(event, LEDGER_KINDS)
    spec = invoice_spec()

    out = await apply(ledger_conn, spec, event)

    table, key = ROW_OF[type(event)]
    payload = _payload(event)
    row = await ledger_conn.fetchrow(f"SELECT * FROM {table} WHERE {key} = $1", payload.id)
    assert row is not None, f"{path.stem}: no {table} row"
    assert (row["event_id"], row["event_at"]) == (event.source.stripe_event_id, event.occurred_at)
    if not isinstance(payload, InvoicePayment):  # a link has no creation of its own
        # The object's own creation time when the event gives it (synthetic fixtures may
        # date it after the event), else the event's time.
        assert row["created_at"] == (payload.created_at or event.occurred_at)
    validator = Draft202012Validator(json_schema(INVOICES))
    for record in out or []:
        assert record.topic == INVOICES
        assert list(validator.iter_errors(json.loads(record.value))) == []
        parsed = parse_ledger_event(record.value)
        assert record.key == (parsed.customer_id or record.key)
        assert record.headers["ce_type"] == parsed.type
    if isinstance(event, SubscriptionEvent | InvoicePaymentEvent):
        # A billing record, a link of rows not in the ledger: nothing on invoices.v1.
        assert out == []
    else:
        assert out, f"{path.stem}: a new row emits its event"
    again = await apply(ledger_conn, spec, event)
    assert again is None  # the runtime's idempotency row: a redelivery changes nothing


@pytest.mark.asyncio(loop_scope="session")
async def test_charge_refunded_fixtures_keep_their_listed_refunds(
    ledger_conn: asyncpg.Connection,
) -> None:
    """A charge.refunded's refunds (when the normalizer lists them) land attached to it."""
    spec = invoice_spec()
    for event in EVENTS.values():
        if not isinstance(event, PaymentEvent) or event.type != "payment.refunded":
            continue
        await apply(ledger_conn, spec, event)
        for refund in event.payment.refunds:
            row = await ledger_conn.fetchrow(
                "SELECT payment_id, amount FROM ledger_refunds WHERE refund_id = $1", refund.id
            )
            assert row is not None
            assert (row["payment_id"], row["amount"]) == (event.payment.id, refund.amount)


# The API's invoice, from the read view's typed columns (the shape of ledger_models.Invoice).
_INVOICE_COLUMNS = """t.invoice_id AS id, t.customer_id, nullif(t.account, '') AS account,
t.livemode, t.number, t.status, t.currency, t.subtotal, t.discount, t.tax, t.total,
t.amount_due, t.amount_paid, t.amount_remaining, t.billing_reason, t.subscription_id,
t.payment_intent_id, t.charge_id, t.attempt_count, t.next_payment_attempt, t.due_date,
t.period_start, t.period_end, t.paid_at, t.hosted_invoice_url, t.invoice_pdf, t.created_at,
t.updated_at"""


@pytest.mark.asyncio(loop_scope="session")
async def test_each_invoice_document_is_its_row_as_the_api_writes_it(
    ledger_conn: asyncpg.Connection,
) -> None:
    """The document the trigger keeps is the view's columns as pydantic encodes them (the
    key order, datetimes in UTC with 'Z'), after the insert and after every update."""
    spec = invoice_spec()
    invoices = [e for e in EVENTS.values() if isinstance(e, InvoiceEvent)]
    assert invoices
    for event in invoices:  # in the fixtures' order: later ones update earlier rows
        await apply(ledger_conn, spec, event)
        await ledger_conn.execute(
            # a time with microseconds, and one of a whole second, on the row
            "UPDATE ledger_invoices SET updated_at = '2030-01-02 03:04:05.012345+00',"
            " paid_at = coalesce(paid_at, '2030-01-02 03:04:05+00') WHERE invoice_id = $1",
            event.invoice.id,
        )
        rows = await ledger_conn.fetch(
            f"SELECT {_INVOICE_COLUMNS}, t.document FROM read_v1_invoices t"
            " WHERE t.invoice_id = $1",
            event.invoice.id,
        )
        assert len(rows) == 1
        row = dict(rows[0])
        document = row.pop("document")
        assert list(json.loads(document)) == list(row)  # the keys, in the model's order
        assert json.loads(document) == json.loads(to_json(row))
        assert '"updated_at" : "2030-01-02T03:04:05.012345Z"' in document
