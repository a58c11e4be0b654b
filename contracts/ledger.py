"""Invoice and payment ledger changes published on ``invoices.v1`` (key = Stripe customer
id; else a refund's or dispute's charge id; else the changed object's id: the payment's for
a receipt).

The invoice worker emits one event each time a row of its ledger is created or changed,
typed by the transition (``invoice.paid`` when an invoice became paid, ``payment.refunded``
when more of a payment was refunded, ...), and ``receipt.issued`` once per succeeded
payment, with its gapless receipt number. An event that changes nothing emits nothing.
The payload is the whole ledger object as it now stands (not a diff), so a consumer may
keep the newest per object id.

``id`` is ``uuid5(EVENT_ID_NAMESPACE, "ledger:<type>:<object id>:<stripe event id>")``:
stable for the Stripe event that caused the change, so a relay's redelivery or a replay
of that event carries the same id. Amounts are integers in the currency's minor unit;
``account`` is the Connect account (None: the platform's own); text never holds NUL, as
on ``billing.events.v1``. Consumers must ignore event types they do not know.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints, TypeAdapter

from contracts.events import (
    EVENT_ID_NAMESPACE,
    NO_NUL,
    BigInt,
    Id,
    InvoiceLine,
    Model,
    RequiredId,
    Text,
    Timestamp,
    event_types,
)

_NAMESPACE: Final = EVENT_ID_NAMESPACE.bytes

Last4 = Annotated[str, StringConstraints(max_length=4, pattern=NO_NUL)]
"""A card's last four digits: never more of the card."""

LedgerInvoiceEventType = Literal[
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.updated",
]
LedgerPaymentEventType = Literal[
    "payment.succeeded", "payment.failed", "payment.refunded", "payment.updated"
]
LedgerRefundEventType = Literal["refund.created", "refund.updated"]
LedgerDisputeEventType = Literal["dispute.opened", "dispute.updated", "dispute.closed"]


def ledger_event_id(event_type: str, object_id: str, stripe_event_id: str) -> uuid.UUID:
    """The stable id of the ``event_type`` change Stripe event ``stripe_event_id`` made to
    ledger object ``object_id`` (a receipt's object is its payment)."""
    return uuid.UUID(ledger_event_id_text(event_type, object_id, stripe_event_id))


def ledger_event_id_text(event_type: str, object_id: str, stripe_event_id: str) -> str:
    """``str(ledger_event_id(...))`` spelled out, as ``entitlements.change_id_text`` is: the
    worker makes several per event."""
    name = f"ledger:{event_type}:{object_id}:{stripe_event_id}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- the ledger objects ---------------------------------------------------------------------


class LedgerInvoice(Model):
    id: RequiredId
    customer_id: Id | None
    number: Text | None = Field(description="Stripe's invoice number (set when finalized).")
    status: Text | None = Field(description="draft, open, paid, uncollectible, void.")
    currency: Text
    subtotal: BigInt | None
    discount: BigInt | None
    tax: BigInt | None
    total: BigInt
    amount_due: BigInt
    amount_paid: BigInt
    amount_remaining: BigInt
    billing_reason: Text | None
    subscription_id: Id | None
    payment_intent_id: Id | None
    charge_id: Id | None
    attempt_count: BigInt
    next_payment_attempt: Timestamp | None
    due_date: Timestamp | None
    period_start: Timestamp | None
    period_end: Timestamp | None
    paid_at: Timestamp | None
    hosted_invoice_url: Text | None
    invoice_pdf: Text | None
    customer_email: Text | None
    lines: list[InvoiceLine]
    created_at: Timestamp = Field(
        description="When Stripe created it (else the earliest event about it)."
    )


class LedgerPayment(Model):
    id: RequiredId = Field(description="The payment intent id, else the charge id.")
    customer_id: Id | None
    payment_intent_id: Id | None
    charge_id: Id | None = Field(
        description="Its latest charge (a payment intent's changes with each attempt)."
    )
    invoice_id: Id | None = Field(description="The invoice it paid, once either names the other.")
    status: Text = Field(description="succeeded, failed, canceled, pending, requires_*, ...")
    amount: BigInt
    amount_captured: BigInt | None
    amount_refunded: BigInt = Field(
        description="Refunded so far, as the newest event that carried the charge says (it "
        "goes down when a refund fails)."
    )
    currency: Text
    failure_code: Text | None
    failure_message: Text | None
    payment_method_type: Text | None
    card_brand: Text | None
    card_last4: Last4 | None
    receipt_url: Text | None = Field(description="Stripe's own receipt page, if any.")
    description: Text | None
    created_at: Timestamp = Field(
        description="When Stripe created the payment (its intent's creation); until an "
        "event of the intent came, the earliest event about it. It only moves earlier."
    )
    succeeded_at: Timestamp | None = Field(
        description="The earliest event that reported it succeeded."
    )


class LedgerRefund(Model):
    id: RequiredId
    payment_id: Id | None = Field(description="None until its payment is in the ledger.")
    charge_id: Id | None
    payment_intent_id: Id | None
    customer_id: Id | None
    amount: BigInt
    currency: Text
    status: Text | None
    reason: Text | None
    created_at: Timestamp


class LedgerDispute(Model):
    id: RequiredId
    payment_id: Id | None = Field(description="None until its payment is in the ledger.")
    charge_id: Id | None
    payment_intent_id: Id | None
    customer_id: Id | None
    amount: BigInt
    currency: Text
    reason: Text | None
    status: Text
    amount_withdrawn: BigInt = Field(description="Funds withdrawn for it (positive); only grows.")
    amount_reinstated: BigInt = Field(description="Funds returned (positive); only grows.")
    evidence_due_by: Timestamp | None
    created_at: Timestamp


class Receipt(Model):
    """What a receipt (its mail, its PDF) shows, as known when it was issued."""

    number: RequiredId = Field(
        description="Gapless per account, mode and year: R-2026-000123, R-acct_1-2026-000007; "
        "test mode has sequences of its own: R-TEST-2026-000004."
    )
    payment_id: RequiredId
    invoice_id: Id | None
    invoice_number: Text | None = Field(description="Stripe's number of that invoice.")
    customer_id: Id | None
    customer_email: Text | None
    customer_name: Text | None
    amount: BigInt
    currency: Text
    paid_at: Timestamp = Field(
        description="When the payment succeeded, as the event that issued the receipt "
        "reports it: the succeeded charge's creation time when that event carries the "
        "charge (every such event of the payment agrees), else that event's time. Its UTC "
        "year is the receipt's."
    )
    issued_at: Timestamp
    lines: list[InvoiceLine] = Field(description="The invoice's lines; empty without one.")
    description: Text | None = Field(description="The payment's description.")
    hosted_invoice_url: Text | None
    payment_method_type: Text | None
    card_brand: Text | None
    card_last4: Last4 | None


# -- envelopes ------------------------------------------------------------------------------


class LedgerEnvelope(Model):
    id: uuid.UUID = Field(
        description="uuid5 of 'ledger:<type>:<object id>:<stripe event id>': stable on replay."
    )
    occurred_at: Timestamp = Field(description="When Stripe created the causing event.")
    customer_id: Id | None = Field(description="Stripe customer id; also the Kafka key.")
    account: Id | None = Field(description="Connected account id; None for the platform.")
    livemode: bool
    caused_by: RequiredId = Field(description="The Stripe event id of the cause.")


class LedgerInvoiceEvent(LedgerEnvelope):
    type: LedgerInvoiceEventType
    invoice: LedgerInvoice


class LedgerPaymentEvent(LedgerEnvelope):
    type: LedgerPaymentEventType
    payment: LedgerPayment


class LedgerRefundEvent(LedgerEnvelope):
    type: LedgerRefundEventType
    refund: LedgerRefund


class LedgerDisputeEvent(LedgerEnvelope):
    type: LedgerDisputeEventType
    dispute: LedgerDispute


class ReceiptIssuedEvent(LedgerEnvelope):
    type: Literal["receipt.issued"]
    receipt: Receipt


LedgerEvent = Annotated[
    LedgerInvoiceEvent
    | LedgerPaymentEvent
    | LedgerRefundEvent
    | LedgerDisputeEvent
    | ReceiptIssuedEvent,
    Field(discriminator="type"),
]
"""Any event on ``invoices.v1``; ``type`` selects the model."""

ledger_event_adapter: TypeAdapter[LedgerEvent] = TypeAdapter(LedgerEvent)

LEDGER_EVENT_TYPES: Final[frozenset[str]] = event_types(LedgerEvent)
"""Every ``type`` an event on ``invoices.v1`` may have today (new ones are added)."""


def parse_ledger_event(data: bytes | str) -> LedgerEvent:
    """Parse an ``invoices.v1`` message value (raises ``pydantic.ValidationError``)."""
    return ledger_event_adapter.validate_json(data)
