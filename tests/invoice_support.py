"""Helpers for the invoice worker's tests: a recording receipt-document sender, event
builders on the contract models, the worker's spec, and the ledger read back as plain data.

Fixtures (a pytest plugin of ``tests/conftest.py``): ``ledger_url`` (session), a migrated
database of the invoice tests' own; ``ledger_conn``, a connection to it inside a
transaction rolled back after the test, so every test meets an empty ledger.

``RecordingSender`` is a real ``Sender`` (the runtime's protocol) standing in for the
receipt documents' renderer, which another part provides: it records what it was handed
and answers ``sent``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest_asyncio

import contracts
from contracts import (
    BillingEvent,
    Checkout,
    CheckoutEvent,
    Dispute,
    DisputeEvent,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    InvoicePayment,
    InvoicePaymentEvent,
    Payment,
    PaymentEvent,
    Refund,
    RefundEvent,
)
from contracts.events import EventSource
from contracts.topics import BILLING_EVENTS
from tests.toy_worker import named_as_toy
from workers.invoice.declaration import DECLARATION
from workers.invoice.handler import InvoiceHandler
from workers.invoice.receipts import DOCUMENT_CHANNEL
from workers.invoice.settings import InvoiceSettings
from workers.invoice.worker import NAME, build
from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult
from workers.runtime.processing import apply_one
from workers.runtime.spec import Effect, Outgoing, Subscription, WorkerSpec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ledger_url(create_database: Any) -> str:
    url: str = await create_database(migrated=True)
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def ledger_conn(ledger_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(ledger_url)
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


class RecordingSender:
    """A receipt-document channel that renders nothing: it keeps each delivery handed to
    it and reports it sent."""

    def __init__(self) -> None:
        self.sent: list[Delivery] = []
        self.closed = False

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy((0.1,), 3)

    @property
    def timeout_seconds(self) -> float:
        return 5.0

    async def send(self, delivery: Delivery) -> SendResult:
        self.sent.append(delivery)
        return SendResult("sent")

    async def aclose(self) -> None:
        self.closed = True


def fixed_clock() -> datetime:
    return NOW


def invoice_spec(prefix: str = "R", sender: RecordingSender | None = None) -> WorkerSpec:
    """The worker's spec as ``build`` makes it, with a recording document channel and a
    fixed clock (so receipts' ``issued_at`` compare equal across runs)."""
    handler = InvoiceHandler(receipt_prefix=prefix, clock=fixed_clock)
    return WorkerSpec(
        name=NAME,
        subscriptions=(
            Subscription(BILLING_EVENTS, handler.handle, handle_batch=handler.handle_batch),
        ),
        emits=DECLARATION.emits,
        channels={DOCUMENT_CHANNEL: sender or RecordingSender()},
    )


async def apply(
    conn: asyncpg.Connection, spec: WorkerSpec, event: BillingEvent
) -> list[Outgoing] | None:
    """What the runtime does for one event, through its own code, in one transaction: the
    idempotency row, then the handler only when the row is new, and its deliveries
    written. Returns the Outgoing (None for a duplicate), not written to the outbox (a
    later test's relay would publish them)."""
    async with conn.transaction():
        out = await apply_one(conn, spec, event)
    return None if out is None else list(out)


async def document_keys(conn: asyncpg.Connection) -> list[str]:
    """The idempotency keys of the worker's receipt-document deliveries, oldest first."""
    rows = await conn.fetch(
        "SELECT idempotency_key FROM deliveries WHERE worker = $1 AND channel = $2 ORDER BY id",
        NAME,
        DOCUMENT_CHANNEL,
    )
    return [row["idempotency_key"] for row in rows]


def build_on_topic(settings: InvoiceSettings) -> WorkerSpec:
    """The real invoice worker, as the registry builds it, consuming ``TOY_TOPIC`` (a
    test's own input topic), with a ``RecordingSender`` as its document channel (the
    renderer is another part's)."""
    spec = build(settings, channels={DOCUMENT_CHANNEL: RecordingSender()})
    return named_as_toy(spec.consuming(os.environ["TOY_TOPIC"]))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def source(event_id: str, *, account: str | None = None, livemode: bool = False) -> EventSource:
    return EventSource(
        stripe_event_id=event_id,
        stripe_event_type="test",
        api_version="2025-11-17.clover",
        livemode=livemode,
        account=account,
    )


def _stripe_id(event_id: str | None) -> str:
    return event_id or f"evt_{uuid.uuid4().hex}"


def invoice(
    invoice_id: str,
    *,
    status: str | None = "open",
    intent: str | None = None,
    number: str | None = None,
    amount: int = 2000,
    created_at: datetime | None = None,
    lines: Sequence[InvoiceLine] | None = None,
) -> Invoice:
    paid = amount if status == "paid" else 0
    return Invoice(
        id=invoice_id,
        number=number,
        status=status,
        currency="eur",
        total=amount,
        amount_due=amount,
        amount_paid=paid,
        amount_remaining=amount - paid,
        subscription_id=None,
        billing_reason="subscription_cycle",
        payment_intent_id=intent,
        charge_id=None,
        attempt_count=0,
        next_payment_attempt=None,
        due_date=None,
        period_start=None,
        period_end=None,
        hosted_invoice_url=f"https://invoice.stripe.test/{invoice_id}",
        invoice_pdf=None,
        customer_email="buyer@example.test",
        lines=list(lines)
        if lines is not None
        else [
            InvoiceLine(
                price_id="price_pro",
                product_id="prod_pro",
                quantity=1,
                amount=amount,
                description="Pro plan",
                id=f"il_{invoice_id}",
                unit_amount=amount,
            )
        ],
        created_at=created_at or at("2026-02-01T00:00:00"),
        subtotal=amount,
        discount=0,
        tax=0,
        paid_at=None,
    )


def invoice_event(
    event_type: contracts.events.InvoiceEventType,
    inv: Invoice,
    *,
    customer_id: str | None,
    occurred_at: datetime,
    event_id: str | None = None,
    account: str | None = None,
) -> InvoiceEvent:
    stripe_id = _stripe_id(event_id)
    return InvoiceEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id, account=account),
        customer_id=customer_id,
        invoice=inv,
    )


def payment(
    payment_id: str,
    *,
    status: str = "succeeded",
    charge: str | None = None,
    invoice_id: str | None = None,
    amount: int = 2000,
    refunded: int = 0,
    card: bool = True,
    created_at: datetime | None = None,
    refunds: Sequence[Refund] = (),
    charge_created_at: datetime | None = None,
    of_charge: bool = False,
) -> Payment:
    """A payment intent ``payment_id`` (its charge ``charge``); ``card``: the event carried
    the charge's card details; ``charge_created_at``: the charge's creation, when the event
    carries it; ``of_charge``: a charge's event of that intent, which (as the gateway
    normalizes it) does not know the intent's creation (``created_at`` None)."""
    return Payment(
        id=payment_id,
        payment_intent_id=payment_id,
        charge_id=charge,
        invoice_id=invoice_id,
        amount=amount,
        amount_refunded=refunded,
        currency="eur",
        status=status,
        failure_code="card_declined" if status != "succeeded" else None,
        failure_message=None,
        receipt_url=None,
        description=f"payment {payment_id}",
        metadata={},
        amount_captured=amount if card else None,
        payment_method_type="card" if card else None,
        card_brand="visa" if card else None,
        card_last4="4242" if card else None,
        created_at=None if of_charge else created_at or at("2026-02-01T00:00:05"),
        refunds=list(refunds),
        charge_created_at=charge_created_at,
    )


def payment_event(
    event_type: contracts.events.PaymentEventType,
    pay: Payment,
    *,
    customer_id: str | None,
    occurred_at: datetime,
    event_id: str | None = None,
    account: str | None = None,
    livemode: bool = False,
) -> PaymentEvent:
    stripe_id = _stripe_id(event_id)
    return PaymentEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id, account=account, livemode=livemode),
        customer_id=customer_id,
        payment=pay,
    )


def refund(
    refund_id: str,
    *,
    charge: str | None,
    intent: str | None = None,
    amount: int = 500,
    status: str | None = "succeeded",
    created_at: datetime | None = None,
) -> Refund:
    return Refund(
        id=refund_id,
        charge_id=charge,
        payment_intent_id=intent,
        amount=amount,
        currency="eur",
        status=status,
        reason="requested_by_customer",
        created_at=created_at or at("2026-02-02T00:00:00"),
    )


def refund_event(
    event_type: contracts.events.RefundEventType,
    ref: Refund,
    *,
    customer_id: str | None,
    occurred_at: datetime,
    event_id: str | None = None,
    account: str | None = None,
) -> RefundEvent:
    stripe_id = _stripe_id(event_id)
    return RefundEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id, account=account),
        customer_id=customer_id,
        refund=ref,
    )


def dispute(
    dispute_id: str,
    *,
    charge: str | None,
    intent: str | None = None,
    status: str = "needs_response",
    amount: int = 2000,
    withdrawn: int = 0,
    reinstated: int = 0,
    created_at: datetime | None = None,
) -> Dispute:
    return Dispute(
        id=dispute_id,
        charge_id=charge,
        payment_intent_id=intent,
        amount=amount,
        currency="eur",
        reason="fraudulent",
        status=status,
        created_at=created_at or at("2026-02-03T00:00:00"),
        evidence_due_by=at("2026-02-20T00:00:00"),
        amount_withdrawn=withdrawn,
        amount_reinstated=reinstated,
    )


def dispute_event(
    event_type: contracts.events.DisputeEventType,
    disp: Dispute,
    *,
    customer_id: str | None,
    occurred_at: datetime,
    event_id: str | None = None,
) -> DisputeEvent:
    stripe_id = _stripe_id(event_id)
    return DisputeEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id),
        customer_id=customer_id,
        dispute=disp,
    )


def invoice_payment_event(
    link_id: str,
    invoice_id: str,
    *,
    intent: str | None,
    occurred_at: datetime,
    amount: int = 2000,
    event_id: str | None = None,
    account: str | None = None,
) -> InvoicePaymentEvent:
    """``invoice_payment.paid``: payment intent ``intent`` paid invoice ``invoice_id``."""
    stripe_id = _stripe_id(event_id)
    return InvoicePaymentEvent(
        id=contracts.event_id_for(stripe_id),
        type="invoice_payment.paid",
        occurred_at=occurred_at,
        source=source(stripe_id, account=account),
        customer_id=None,
        invoice_payment=InvoicePayment(
            id=link_id,
            invoice_id=invoice_id,
            payment_intent_id=intent,
            charge_id=None,
            amount_paid=amount,
            currency="eur",
            status="paid",
        ),
    )


def checkout_event(
    customer_id: str, user_id: str, *, occurred_at: datetime, event_id: str | None = None
) -> CheckoutEvent:
    stripe_id = _stripe_id(event_id)
    return CheckoutEvent(
        id=contracts.event_id_for(stripe_id),
        type="checkout.completed",
        occurred_at=occurred_at,
        source=source(stripe_id),
        customer_id=customer_id,
        checkout=Checkout(
            id=f"cs_{stripe_id}",
            mode="subscription",
            status="complete",
            payment_status="paid",
            client_reference_id=user_id,
            subscription_id=None,
            payment_intent_id=None,
            invoice_id=None,
            amount_total=None,
            currency=None,
            customer_email=None,
            metadata={},
        ),
    )


# -- reading the ledger back -------------------------------------------------------------------

LEDGER_TABLES = {
    "ledger_customers": "customer_id",
    "ledger_invoices": "invoice_id",
    "ledger_payments": "payment_id",
    "ledger_refunds": "refund_id",
    "ledger_disputes": "dispute_id",
    "ledger_subscriptions": "subscription_id",
    "ledger_invoice_payments": "invoice_payment_id",
}


def _without_write_time(row: asyncpg.Record) -> dict[str, Any]:
    """A row but its ``updated_at`` (when it was written), in an invoice's document too."""
    kept = {k: v for k, v in dict(row).items() if k != "updated_at"}
    if "document" in kept:
        kept["document"] = {
            k: v for k, v in json.loads(kept["document"]).items() if k != "updated_at"
        }
    return kept


async def ledger_tables(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Every ledger table's rows (all columns but ``updated_at``) by primary key order."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, key in LEDGER_TABLES.items():
        rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {key}")
        tables[table] = [_without_write_time(row) for row in rows]
    return tables


async def receipts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM ledger_receipts ORDER BY account, year, sequence")


def ledger_events(effects: Sequence[Effect] | None) -> list[contracts.LedgerEvent]:
    """The ``invoices.v1`` events among ``effects``, parsed by the contract."""
    return [contracts.parse_ledger_event(e.value) for e in effects or [] if isinstance(e, Outgoing)]


def types(effects: Sequence[Effect] | None) -> list[str]:
    return [event.type for event in ledger_events(effects)]
