"""Clover and basil link an invoice to the payment that paid it only by ``invoice_payment.paid``
(they removed ``invoice.payment_intent``/``charge``, ``payment_intent.invoice`` and
``charge.invoice``): with the real clover fixtures of one payment, whatever order the three
events come in, the payment names its invoice, the invoice its payment, and the receipt
view shows Stripe's invoice number. Real PostgreSQL, the runtime's per-event path."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
import pytest

from api_gateway.normalize import normalize
from contracts import (
    BillingEvent,
    InvoiceEvent,
    LedgerPaymentEvent,
    PaymentEvent,
    ReceiptIssuedEvent,
)
from tests.invoice_support import apply, invoice_spec, ledger_events
from tests.stripe_fixtures import load_event

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

INVOICE, INTENT, LINK = (
    "invoice.paid__zulip__1",
    "payment_intent.succeeded__zulip__1",
    "invoice_payment.paid__zulip__1",
)


def clover_payment() -> dict[str, BillingEvent]:
    """The three fixtures as the gateway normalizes them. The fixture collection replaced
    the ids that would tie them together with placeholders: the link is pointed at the
    invoice and the intent, and the invoice at the intent's customer."""
    raw: dict[str, dict[str, Any]] = {name: load_event(name) for name in (INVOICE, INTENT, LINK)}
    invoice, intent = raw[INVOICE]["data"]["object"], raw[INTENT]["data"]["object"]
    link = raw[LINK]["data"]["object"]
    link["invoice"] = invoice["id"]
    link["payment"]["payment_intent"] = intent["id"]
    invoice["customer"] = intent["customer"]
    return {name: normalize(event) for name, event in raw.items()}


@pytest.mark.parametrize(
    "order", list(itertools.permutations((INVOICE, INTENT, LINK))), ids="+".join
)
async def test_in_any_order_the_payment_and_the_invoice_name_each_other(
    ledger_conn: asyncpg.Connection, order: tuple[str, ...]
) -> None:
    events = clover_payment()
    spec = invoice_spec()
    emitted = []
    for name in order:
        emitted += ledger_events(await apply(ledger_conn, spec, events[name]))

    invoice, payment = events[INVOICE], events[INTENT]
    assert isinstance(invoice, InvoiceEvent) and isinstance(payment, PaymentEvent)
    invoice_id, payment_id = invoice.invoice.id, payment.payment.id
    stored = await ledger_conn.fetchrow(
        "SELECT invoice_id FROM ledger_payments WHERE payment_id = $1", payment_id
    )
    assert stored is not None and stored["invoice_id"] == invoice_id
    intent_of_invoice = await ledger_conn.fetchval(
        "SELECT payment_intent_id FROM ledger_invoices WHERE invoice_id = $1", invoice_id
    )
    assert intent_of_invoice == payment_id
    receipt = await ledger_conn.fetchrow(
        "SELECT number, invoice_id, invoice_number FROM read_v1_receipts WHERE payment_id = $1",
        payment_id,
    )
    assert receipt is not None
    assert (receipt["invoice_id"], receipt["invoice_number"]) == (invoice_id, "NORMALIZED")
    # One receipt, and the last word on invoices.v1 about the payment names the invoice.
    assert [e.type for e in emitted].count("receipt.issued") == 1
    last = [e for e in emitted if isinstance(e, LedgerPaymentEvent)][-1]
    assert last.payment.invoice_id == invoice_id
    issued = [e for e in emitted if isinstance(e, ReceiptIssuedEvent)]
    # As known when it was issued: the invoice's number only if the link came before.
    linked_first = order.index(INTENT) > max(order.index(INVOICE), order.index(LINK))
    assert (issued[0].receipt.invoice_number == "NORMALIZED") is linked_first
