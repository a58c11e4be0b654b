"""Normalized billing events published on ``billing.events.v1``.

Every event is one Stripe event, translated into a stable, versioned shape: the
envelope (``id``, ``type``, ``occurred_at``, ``source``, ``customer_id``) plus a typed
payload chosen by ``type``. Amounts are integers in the currency's minor unit, as
Stripe sends them. Consumers must ignore event types they do not know: new types are
added without a new topic version; removing or changing a field is a new version.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

EVENT_ID_NAMESPACE = uuid.UUID("6f1c4b1e-6b5f-4d38-9d0a-3c1f2f8f9b10")


def event_id_for(stripe_event_id: str) -> uuid.UUID:
    """Our event id: stable for a Stripe event, so every redelivery carries the same id."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, stripe_event_id)


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventSource(Model):
    """Where the event came from, untouched."""

    stripe_event_id: str
    stripe_event_type: str
    api_version: str | None = Field(description="API version Stripe rendered the event with.")
    livemode: bool
    account: str | None = Field(description="Connected account id for Connect events.")


# -- payloads ------------------------------------------------------------------------------


class SubscriptionItem(Model):
    id: str | None
    price_id: str | None = Field(description="Price id (or legacy plan id).")
    product_id: str | None
    lookup_key: str | None
    quantity: int
    current_period_start: AwareDatetime | None
    current_period_end: AwareDatetime | None
    product_metadata: dict[str, str] = Field(
        default_factory=dict,
        description="The product's metadata when Stripe expanded price.product (or "
        "plan.product); empty otherwise.",
    )


class PauseCollection(Model):
    behavior: str
    resumes_at: AwareDatetime | None


class Cancellation(Model):
    """How a subscription ends: at the end of the paid period, or right now."""

    mode: Literal["at_period_end", "immediately"]
    effective_at: AwareDatetime | None
    reason: str | None


class Subscription(Model):
    id: str
    status: str = Field(description="Stripe subscription status, e.g. active, trialing.")
    items: list[SubscriptionItem]
    current_period_start: AwareDatetime | None
    current_period_end: AwareDatetime | None
    cancel_at_period_end: bool
    cancellation: Cancellation | None
    trial_start: AwareDatetime | None
    trial_end: AwareDatetime | None
    pause_collection: PauseCollection | None
    metadata: dict[str, str]
    changed_fields: list[str] = Field(
        description="Top-level Stripe fields this event changed (from previous_attributes)."
    )


class InvoiceLine(Model):
    price_id: str | None
    product_id: str | None
    quantity: int | None
    amount: int
    description: str | None


class Invoice(Model):
    id: str
    number: str | None
    status: str | None
    currency: str
    total: int
    amount_due: int
    amount_paid: int
    amount_remaining: int
    subscription_id: str | None
    billing_reason: str | None
    payment_intent_id: str | None
    charge_id: str | None
    attempt_count: int
    next_payment_attempt: AwareDatetime | None
    due_date: AwareDatetime | None
    period_start: AwareDatetime | None
    period_end: AwareDatetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    customer_email: str | None
    lines: list[InvoiceLine]


class Payment(Model):
    id: str = Field(description="The payment intent id, or the charge id where there is none.")
    payment_intent_id: str | None
    charge_id: str | None
    invoice_id: str | None
    amount: int
    amount_refunded: int
    currency: str
    status: str
    failure_code: str | None
    failure_message: str | None
    receipt_url: str | None
    description: str | None
    metadata: dict[str, str]


class Dispute(Model):
    id: str
    charge_id: str | None
    payment_intent_id: str | None
    amount: int
    currency: str
    reason: str | None
    status: str


class Checkout(Model):
    id: str
    mode: str
    status: str | None
    payment_status: str | None
    client_reference_id: str | None = Field(description="Usually the application's user id.")
    subscription_id: str | None
    payment_intent_id: str | None
    invoice_id: str | None
    amount_total: int | None
    currency: str | None
    customer_email: str | None
    metadata: dict[str, str]


class Customer(Model):
    id: str
    email: str | None
    name: str | None
    user_id: str | None = Field(description="metadata.user_id: the application's user.")
    metadata: dict[str, str]
    deleted: bool


class ActiveEntitlement(Model):
    id: str
    feature_id: str
    lookup_key: str


class EntitlementSummary(Model):
    """Stripe's own entitlements: the active set for the customer."""

    entitlements: list[ActiveEntitlement]
    truncated: bool = Field(
        default=False,
        description="Stripe's list had more entries than the event carries (has_more): "
        "fetch the full set before revoking anything.",
    )


# -- envelopes -----------------------------------------------------------------------------


class Envelope(Model):
    id: uuid.UUID = Field(description="Our id: uuid5 of the Stripe event id, stable on redelivery.")
    occurred_at: AwareDatetime = Field(
        description="When Stripe created the event (1 s resolution)."
    )
    source: EventSource
    customer_id: str | None = Field(description="Stripe customer id; also the Kafka key.")


SubscriptionEventType = Literal[
    "subscription.activated",
    "subscription.updated",
    "subscription.canceled",
    "subscription.paused",
    "subscription.resumed",
    "subscription.trial_will_end",
]
InvoiceEventType = Literal[
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
]
PaymentEventType = Literal["payment.succeeded", "payment.failed", "payment.refunded"]
DisputeEventType = Literal["dispute.opened", "dispute.updated", "dispute.closed"]
CustomerEventType = Literal["customer.created", "customer.updated", "customer.deleted"]


class SubscriptionEvent(Envelope):
    type: SubscriptionEventType
    subscription: Subscription


class InvoiceEvent(Envelope):
    type: InvoiceEventType
    invoice: Invoice


class PaymentEvent(Envelope):
    type: PaymentEventType
    payment: Payment


class DisputeEvent(Envelope):
    type: DisputeEventType
    dispute: Dispute


class CheckoutEvent(Envelope):
    type: Literal["checkout.completed"]
    checkout: Checkout


class CustomerEvent(Envelope):
    type: CustomerEventType
    customer: Customer


class EntitlementSummaryEvent(Envelope):
    type: Literal["entitlement_summary.updated"]
    summary: EntitlementSummary


BillingEvent = Annotated[
    SubscriptionEvent
    | InvoiceEvent
    | PaymentEvent
    | DisputeEvent
    | CheckoutEvent
    | CustomerEvent
    | EntitlementSummaryEvent,
    Field(discriminator="type"),
]
"""Any event on ``billing.events.v1``; ``type`` selects the model."""

billing_event_adapter: TypeAdapter[BillingEvent] = TypeAdapter(BillingEvent)


def parse_billing_event(data: bytes | str) -> BillingEvent:
    """Parse a ``billing.events.v1`` message value (raises ``pydantic.ValidationError``)."""
    return billing_event_adapter.validate_json(data)
