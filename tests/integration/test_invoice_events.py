"""The invoice worker's ``invoices.v1`` records: typed by the transition, keyed by customer
(else the object), CloudEvents headers from the one builder, ids stable when the same
history is applied again, every record valid against the committed schema, and nothing
for an event that changed nothing."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg
import pytest
from jsonschema import Draft202012Validator

from contracts import (
    INVOICES,
    BillingEvent,
    LedgerDisputeEvent,
    LedgerEvent,
    LedgerInvoiceEvent,
    LedgerPaymentEvent,
    LedgerRefundEvent,
    ReceiptIssuedEvent,
    json_schema,
    ledger_event_id,
    parse_ledger_event,
)
from contracts.headers import REQUIRED_HEADERS
from tests.invoice_support import (
    apply,
    at,
    dispute,
    dispute_event,
    invoice,
    invoice_event,
    invoice_spec,
    payment,
    payment_event,
    refund,
    refund_event,
)
from workers.invoice.emit import CE_SOURCE
from workers.runtime.spec import Outgoing

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CUSTOMER = "cus_events"


def history() -> list[BillingEvent]:
    """An invoice paid by a card payment, refunded in part, disputed, and a guest payment;
    fixed Stripe ids, so two runs are the same events."""

    def t(second: int) -> datetime:
        return at(f"2026-02-01T10:00:{second:02d}")

    return [
        invoice_event("invoice.created", invoice("in_ev", status="draft"), customer_id=CUSTOMER,
                      occurred_at=t(0), event_id="evt_ev_01"),
        invoice_event("invoice.finalized", invoice("in_ev", status="open", intent="pi_ev",
                                                   number="INV-7"),
                      customer_id=CUSTOMER, occurred_at=t(1), event_id="evt_ev_02"),
        payment_event("payment.succeeded", payment("pi_ev", charge="ch_ev"),
                      customer_id=CUSTOMER, occurred_at=t(2), event_id="evt_ev_03"),
        invoice_event("invoice.paid", invoice("in_ev", status="paid", intent="pi_ev",
                                              number="INV-7"),
                      customer_id=CUSTOMER, occurred_at=t(3), event_id="evt_ev_04"),
        refund_event("refund.created", refund("re_ev", charge="ch_ev", amount=500),
                     customer_id=None, occurred_at=t(4), event_id="evt_ev_05"),
        payment_event("payment.refunded", payment("pi_ev", charge="ch_ev", refunded=500),
                      customer_id=CUSTOMER, occurred_at=t(5), event_id="evt_ev_06"),
        dispute_event("dispute.opened", dispute("dp_ev", charge="ch_ev", intent="pi_ev"),
                      customer_id=None, occurred_at=t(6), event_id="evt_ev_07"),
        dispute_event("dispute.closed", dispute("dp_ev", charge="ch_ev", intent="pi_ev",
                                                status="lost", withdrawn=2000),
                      customer_id=None, occurred_at=t(7), event_id="evt_ev_08"),
        payment_event("payment.succeeded", payment("pi_guest", charge="ch_guest"),
                      customer_id=None, occurred_at=t(8), event_id="evt_ev_09"),
    ]  # fmt: skip


async def run(conn: asyncpg.Connection) -> list[list[Outgoing] | None]:
    """The history applied one event at a time, in a savepoint rolled back afterwards."""
    spec = invoice_spec()
    transaction = conn.transaction()
    await transaction.start()
    try:
        return [await apply(conn, spec, event) for event in history()]
    finally:
        await transaction.rollback()


async def test_each_change_is_typed_by_its_transition(ledger_conn: asyncpg.Connection) -> None:
    outs = await run(ledger_conn)
    assert [[parse_ledger_event(o.value).type for o in out or []] for out in outs] == [
        ["invoice.created"],
        ["invoice.finalized"],
        ["payment.succeeded", "receipt.issued"],  # with the finalized invoice naming it
        ["invoice.paid"],
        ["refund.created"],
        ["payment.refunded"],
        ["dispute.opened"],
        ["dispute.closed"],
        ["payment.succeeded", "receipt.issued"],
    ]


def expected_key(event: LedgerEvent, object_id: str) -> str:
    """The customer; without one a refund's or dispute's charge, else the object's id."""
    match event:
        case LedgerRefundEvent():
            return event.customer_id or event.refund.charge_id or object_id
        case LedgerDisputeEvent():
            return event.customer_id or event.dispute.charge_id or object_id
        case _:
            return event.customer_id or object_id


async def test_refunds_and_disputes_before_their_payment_are_keyed_by_their_charge(
    ledger_conn: asyncpg.Connection,
) -> None:
    """As the gateway keys their Stripe events: one charge's customer-less refunds and
    disputes share a key (not one each); once attached, the payment's customer."""

    def t(second: int) -> datetime:
        return at(f"2026-02-02T10:00:{second:02d}")

    spec = invoice_spec()
    early: list[BillingEvent] = [
        refund_event("refund.created", refund("re_k1", charge="ch_k"), customer_id=None,
                     occurred_at=t(1)),
        refund_event("refund.created", refund("re_k2", charge="ch_k"), customer_id=None,
                     occurred_at=t(2)),
        dispute_event("dispute.opened", dispute("dp_k", charge="ch_k"), customer_id=None,
                      occurred_at=t(3)),
        refund_event("refund.created", refund("re_k3", charge=None, intent="pi_k"),
                     customer_id=None, occurred_at=t(4)),
    ]  # fmt: skip
    keys = [[r.key for r in await apply(ledger_conn, spec, e) or []] for e in early]
    assert keys == [["ch_k"], ["ch_k"], ["ch_k"], ["re_k3"]]
    arrived = payment_event("payment.succeeded", payment("pi_k", charge="ch_k"),
                            customer_id=CUSTOMER, occurred_at=t(5))  # fmt: skip
    out = await apply(ledger_conn, spec, arrived) or []
    attached = [
        r for r in out if parse_ledger_event(r.value).type in ("refund.updated", "dispute.updated")
    ]
    assert len(attached) == 4 and {r.key for r in attached} == {CUSTOMER}  # fmt: skip


async def test_records_are_keyed_headed_and_valid_against_the_committed_schema(
    ledger_conn: asyncpg.Connection,
) -> None:
    validator = Draft202012Validator(json_schema(INVOICES))
    records = [o for out in await run(ledger_conn) for o in out or []]
    assert len(records) == 11
    for record in records:
        body = json.loads(record.value)
        assert list(validator.iter_errors(body)) == [], body["type"]
        event = parse_ledger_event(record.value)
        object_id = _object_id(event)
        assert record.topic == INVOICES
        assert record.key == expected_key(event, object_id)
        assert str(event.id) == str(ledger_event_id(event.type, object_id, event.caused_by))
        headers = record.headers
        assert set(REQUIRED_HEADERS) <= set(headers)
        assert (headers["ce_id"], headers["ce_type"], headers["ce_source"]) == (
            str(event.id), event.type, CE_SOURCE,
        )  # fmt: skip
        assert headers["ce_time"] == event.occurred_at.isoformat().replace("+00:00", "Z")
        assert headers.get("ce_subject") == event.customer_id
        # Built without the models, the bytes are still what the models would write.
        assert event.model_dump_json().encode() == record.value
    guest = [r for r in records if r.key == "pi_guest"]
    assert [parse_ledger_event(r.value).type for r in guest] == [
        "payment.succeeded", "receipt.issued",
    ]  # fmt: skip
    assert all("ce_subject" not in r.headers for r in guest)
    dispute_record = parse_ledger_event(
        next(r for r in records if b'"dispute.closed"' in r.value).value
    )
    assert dispute_record.customer_id == CUSTOMER  # attached at once: its payment's customer


async def test_the_same_history_applied_again_emits_the_same_records(
    ledger_conn: asyncpg.Connection,
) -> None:
    first, second = await run(ledger_conn), await run(ledger_conn)
    assert first == second  # ids, bodies (the receipt's issued_at is the test clock), headers


async def test_an_event_that_changes_nothing_emits_nothing(
    ledger_conn: asyncpg.Connection,
) -> None:
    """Stripe sends invoice.paid and invoice.payment_succeeded for one payment (both
    normalize to invoice.paid): the second changes the row's mark, not the invoice."""
    spec = invoice_spec()
    paid = invoice("in_twice", status="paid", intent="pi_twice")
    events = [
        invoice_event("invoice.paid", paid, customer_id=CUSTOMER,
                      occurred_at=at("2026-02-01T10:00:00"), event_id=f"evt_twice_{n}")
        for n in (1, 2)
    ]  # fmt: skip
    first = await apply(ledger_conn, spec, events[0])
    assert [parse_ledger_event(o.value).type for o in first or []] == ["invoice.paid"]
    assert await apply(ledger_conn, spec, events[1]) == []
    stored = await ledger_conn.fetchval(
        "SELECT event_id FROM ledger_invoices WHERE invoice_id = 'in_twice'"
    )
    assert stored == "evt_twice_2"  # the greater id: the same row whatever came first


def _object_id(event: LedgerEvent) -> str:
    match event:
        case LedgerInvoiceEvent():
            return event.invoice.id
        case LedgerPaymentEvent():
            return event.payment.id
        case LedgerRefundEvent():
            return event.refund.id
        case LedgerDisputeEvent():
            return event.dispute.id
        case ReceiptIssuedEvent():
            return event.receipt.payment_id
