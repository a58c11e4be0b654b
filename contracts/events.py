"""Normalized billing events published on ``billing.events.v1``.

Every event is one Stripe event, translated into a stable, versioned shape: the
envelope (``id``, ``type``, ``occurred_at``, ``source``, ``customer_id``) plus a typed
payload chosen by ``type``. Amounts are integers in the currency's minor unit, as
Stripe sends them. Consumers must ignore event types they do not know: new types are
added without a new topic version; removing or changing a field is a new version.

The models carry what a worker relies on to apply an event, so their JSON Schemas state
it and the ingress refuses (422) what no worker could apply: text without NUL (which
PostgreSQL cannot store), ids short enough for its index keys, integers within its
bigint, non-negative quantities, timestamps between 1970 and 9000, a customer on every
event whose effects belong to one, and at least one priced item per subscription.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

EVENT_ID_NAMESPACE = uuid.UUID("6f1c4b1e-6b5f-4d38-9d0a-3c1f2f8f9b10")

NO_NUL: Final = r"^[^\x00]*$"
"""Text PostgreSQL can store: anything but NUL (U+0000); lone surrogates never validate."""
ID_MAX_LENGTH: Final = 255
"""Stripe's ids are at most 255 characters: two of them fit one PostgreSQL index row."""
METADATA_VALUE_MAX_LENGTH: Final = 500
"""Stripe's limit for a metadata value (``metadata.user_id`` becomes an indexed user id)."""
BIGINT_MIN: Final = -(2**63)
BIGINT_MAX: Final = 2**63 - 1
"""PostgreSQL's bigint: every integer fits one; entitlement limits saturate at the maximum."""
QUANTITY_MAX: Final = 2**31 - 1
"""A quantity's maximum (PostgreSQL's integer); far above any real seat count."""
TIMESTAMP_YEARS: Final = r"^(19[7-9][0-9]|[2-8][0-9]{3})-"
"""Timestamps are written from 1970 to 8999 (the year of their text): a worker adds grace
periods and purchase durations to them and stores them, so they stay far from Python's
and PostgreSQL's ends of time. The models allow a day either side, for UTC offsets."""
PURCHASE_KEYS: Final = ("price_id", "lookup_key", "product_id")
"""Metadata keys that make a payment or checkout a one-off purchase (any of them non-empty)."""
PURCHASE_QUANTITY: Final = r"^[1-9][0-9]{0,8}$"
"""The ``quantity`` metadata of a one-off purchase, when given: 1 to 999,999,999."""
_QUANTITY: Final = re.compile(PURCHASE_QUANTITY)


def storable_text(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: no NUL, no lone surrogate (``NO_NUL``'s rule,
    for text outside the models: request paths, token subjects)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def event_id_for(stripe_event_id: str) -> uuid.UUID:
    """Our event id: stable for a Stripe event, so every redelivery carries the same id."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, stripe_event_id)


# Constraints as pydantic-core checks them (a compiled pattern per field, no Python call
# per value: measured cheaper than an AfterValidator), and as the JSON Schemas state them.
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
Id = Annotated[str, StringConstraints(max_length=ID_MAX_LENGTH, pattern=NO_NUL)]
RequiredId = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=NO_NUL)
]
MetadataValue = Annotated[
    str, StringConstraints(max_length=METADATA_VALUE_MAX_LENGTH, pattern=NO_NUL)
]
Metadata = Annotated[
    dict[Text, MetadataValue],
    # pydantic would state key constraints as patternProperties, which lets other keys by.
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {
                "type": "string",
                "maxLength": METADATA_VALUE_MAX_LENGTH,
                "pattern": NO_NUL,
            },
        }
    ),
]
BigInt = Annotated[int, Field(ge=BIGINT_MIN, le=BIGINT_MAX)]
Quantity = Annotated[int, Field(ge=0, le=QUANTITY_MAX)]
Timestamp = Annotated[
    AwareDatetime,
    Field(ge=datetime(1969, 12, 31, tzinfo=UTC), lt=datetime(9000, 1, 2, tzinfo=UTC)),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIMESTAMP_YEARS}),
]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventSource(Model):
    """Where the event came from, untouched."""

    stripe_event_id: Id
    stripe_event_type: Text
    api_version: Text | None = Field(description="API version Stripe rendered the event with.")
    livemode: bool
    account: Id | None = Field(description="Connected account id for Connect events.")


# -- payloads ------------------------------------------------------------------------------


class SubscriptionItem(Model):
    id: Id | None
    price_id: RequiredId = Field(
        description="Price id (or legacy plan id): what the worker's catalog maps to features."
    )
    product_id: Id | None
    lookup_key: Id | None
    quantity: Quantity
    current_period_start: Timestamp | None
    current_period_end: Timestamp | None
    product_metadata: Metadata = Field(
        default_factory=dict,
        description="The product's metadata when Stripe expanded price.product (or "
        "plan.product); empty otherwise.",
    )


class PauseCollection(Model):
    behavior: Text
    resumes_at: Timestamp | None


class Cancellation(Model):
    """How a subscription ends: at the end of the paid period, or right now."""

    mode: Literal["at_period_end", "immediately"]
    effective_at: Timestamp | None
    reason: Text | None


class Subscription(Model):
    id: Id
    status: Text = Field(description="Stripe subscription status, e.g. active, trialing.")
    items: list[SubscriptionItem] = Field(
        min_length=1,
        description="At least one: a subscription without items would revoke what it grants.",
    )
    current_period_start: Timestamp | None
    current_period_end: Timestamp | None
    cancel_at_period_end: bool
    cancellation: Cancellation | None
    trial_start: Timestamp | None
    trial_end: Timestamp | None
    pause_collection: PauseCollection | None
    metadata: Metadata
    changed_fields: list[Text] = Field(
        description="Top-level Stripe fields this event changed (from previous_attributes)."
    )
    created_at: Timestamp | None = Field(default=None, description="When Stripe created it.")
    canceled_at: Timestamp | None = Field(
        default=None, description="When it was canceled (Stripe's canceled_at), if it was."
    )


class InvoiceLine(Model):
    price_id: Id | None
    product_id: Id | None
    quantity: Quantity | None
    amount: BigInt
    description: Text | None
    id: Id | None = Field(default=None, description="The line item's id.")
    unit_amount: BigInt | None = Field(
        default=None, description="The price's unit amount, when Stripe gives it."
    )
    period_start: Timestamp | None = None
    period_end: Timestamp | None = None


class Invoice(Model):
    id: Id
    number: Text | None
    status: Text | None
    currency: Text
    total: BigInt
    amount_due: BigInt
    amount_paid: BigInt
    amount_remaining: BigInt
    subscription_id: Id | None
    billing_reason: Text | None
    payment_intent_id: Id | None
    charge_id: Id | None
    attempt_count: BigInt
    next_payment_attempt: Timestamp | None
    due_date: Timestamp | None
    period_start: Timestamp | None
    period_end: Timestamp | None
    hosted_invoice_url: Text | None
    invoice_pdf: Text | None
    customer_email: Text | None
    lines: list[InvoiceLine]
    created_at: Timestamp | None = Field(default=None, description="When Stripe created it.")
    subtotal: BigInt | None = Field(default=None, description="Before discounts and tax.")
    discount: BigInt | None = Field(default=None, description="The discounts' total amount.")
    tax: BigInt | None = Field(default=None, description="The taxes' total amount.")
    paid_at: Timestamp | None = Field(
        default=None, description="When it was paid (status_transitions.paid_at)."
    )


class Refund(Model):
    """A refund of (part of) a payment; a payment may have several."""

    id: RequiredId
    charge_id: Id | None
    payment_intent_id: Id | None
    amount: BigInt
    currency: Text
    status: Text | None = Field(description="pending, succeeded, failed, canceled, ...")
    reason: Text | None
    created_at: Timestamp | None


class Payment(Model):
    id: Id = Field(description="The payment intent id, or the charge id where there is none.")
    payment_intent_id: Id | None
    charge_id: Id | None
    invoice_id: Id | None
    amount: BigInt
    amount_refunded: BigInt
    currency: Text
    status: Text
    failure_code: Text | None
    failure_message: Text | None
    receipt_url: Text | None
    description: Text | None
    metadata: Metadata
    amount_captured: BigInt | None = Field(default=None, description="Of the charge, if any.")
    payment_method_type: Text | None = Field(default=None, description="e.g. card, sepa_debit.")
    card_brand: Text | None = Field(default=None, description="e.g. visa, for card payments.")
    card_last4: Annotated[str, StringConstraints(max_length=4, pattern=NO_NUL)] | None = Field(
        default=None, description="The card's last four digits; never more of the card."
    )
    created_at: Timestamp | None = Field(
        default=None,
        description="When Stripe created the payment: its payment intent's `created` (a "
        "charge without an intent: the charge's). None on a charge's event when the charge "
        "belongs to an intent: the charge's creation is not the payment's.",
    )
    refunds: list[Refund] = Field(
        default_factory=list,
        description="The refunds the Stripe object listed (a charge's refunds), if it did.",
    )
    charge_created_at: Timestamp | None = Field(
        default=None,
        description="When Stripe created the charge the event carries (the intent's latest "
        "charge, when expanded), if it carries one.",
    )


class InvoicePayment(Model):
    """Stripe's link between an invoice and one payment of it (its ``InvoicePayment``):
    since 2025-03-31.basil the only place that names which payment paid an invoice (the
    invoice, the payment intent and the charge no longer name each other)."""

    id: RequiredId
    invoice_id: RequiredId
    payment_intent_id: Id | None = Field(description="The payment, when it is an intent.")
    charge_id: Id | None = Field(description="The payment, when it is a charge without intent.")
    amount_paid: BigInt | None = Field(description="What it paid of the invoice, once paid.")
    currency: Text
    status: Text = Field(description="open, paid, canceled.")


class Dispute(Model):
    id: Id
    charge_id: Id | None
    payment_intent_id: Id | None
    amount: BigInt
    currency: Text
    reason: Text | None
    status: Text
    created_at: Timestamp | None = Field(default=None, description="When it was opened.")
    evidence_due_by: Timestamp | None = None
    amount_withdrawn: BigInt = Field(
        default=0, description="Funds withdrawn from the balance for it (positive)."
    )
    amount_reinstated: BigInt = Field(
        default=0, description="Funds returned to the balance (a won dispute)."
    )


class Checkout(Model):
    id: Id
    mode: Text
    status: Text | None
    payment_status: Text | None
    client_reference_id: MetadataValue | None = Field(
        description="Usually the application's user id."
    )
    subscription_id: Id | None
    payment_intent_id: Id | None
    invoice_id: Id | None
    amount_total: BigInt | None
    currency: Text | None
    customer_email: Text | None
    metadata: Metadata


class Customer(Model):
    id: RequiredId
    email: Text | None
    name: Text | None
    user_id: MetadataValue | None = Field(description="metadata.user_id: the application's user.")
    metadata: Metadata
    deleted: bool


class ActiveEntitlement(Model):
    id: Id
    feature_id: Id
    lookup_key: Id = Field(description="The feature's lookup key: the worker's feature name.")


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
    occurred_at: Timestamp = Field(description="When Stripe created the event (1 s resolution).")
    source: EventSource
    customer_id: Id | None = Field(description="Stripe customer id; also the Kafka key.")


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
RefundEventType = Literal["refund.created", "refund.updated", "refund.failed"]
CustomerEventType = Literal["customer.created", "customer.updated", "customer.deleted"]


def _names_purchase(metadata: dict[str, str]) -> bool:
    return any(metadata.get(key) for key in PURCHASE_KEYS)


def _purchase_needs(customer_id: str | None, metadata: dict[str, str]) -> None:
    """A one-off purchase belongs to a customer and names a valid quantity, if any."""
    if not customer_id:
        raise PydanticCustomError(
            "purchase_without_customer",
            "a one-off purchase (metadata names {keys}) needs a customer_id to entitle",
            {"keys": "/".join(PURCHASE_KEYS)},
        )
    quantity = metadata.get("quantity")
    if quantity is not None and not _QUANTITY.fullmatch(quantity):
        raise PydanticCustomError(
            "purchase_quantity",
            "metadata.quantity of a one-off purchase must be a whole number from 1 to 999999999",
        )


def _purchase_schema(
    payload: str, when: dict[str, Any], event_when: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON Schema of ``_purchase_needs``, for events whose ``payload`` matches ``when``
    (and whose own properties match ``event_when``)."""
    names = [{"required": [key], "properties": {key: {"minLength": 1}}} for key in PURCHASE_KEYS]
    return {
        "allOf": [
            {
                "if": {
                    "properties": {
                        **(event_when or {}),
                        payload: {
                            "properties": {**when, "metadata": {"anyOf": names}},
                        },
                    }
                },
                "then": {
                    "properties": {
                        "customer_id": {"type": "string", "minLength": 1},
                        payload: {
                            "properties": {
                                "metadata": {
                                    "properties": {"quantity": {"pattern": PURCHASE_QUANTITY}}
                                }
                            }
                        },
                    }
                },
            }
        ]
    }


class SubscriptionEvent(Envelope):
    type: SubscriptionEventType
    customer_id: RequiredId = Field(
        description="Stripe customer id; also the Kafka key. Required: the subscription's "
        "grants belong to it."
    )
    subscription: Subscription


class InvoiceEvent(Envelope):
    type: InvoiceEventType
    invoice: Invoice


class PaymentEvent(Envelope):
    """A succeeded payment without an invoice whose metadata names a one-off purchase
    (``PURCHASE_KEYS``) carries a customer and, if any, a valid ``quantity``."""

    model_config = ConfigDict(
        json_schema_extra=_purchase_schema(
            "payment",
            {"invoice_id": {"type": "null"}},
            {"type": {"const": "payment.succeeded"}},
        )
    )

    type: PaymentEventType
    payment: Payment

    @model_validator(mode="after")
    def _purchase(self) -> Self:
        payment = self.payment
        if (
            self.type == "payment.succeeded"
            and payment.invoice_id is None
            and _names_purchase(payment.metadata)
        ):
            _purchase_needs(self.customer_id, payment.metadata)
        return self


class DisputeEvent(Envelope):
    type: DisputeEventType
    dispute: Dispute


class InvoicePaymentEvent(Envelope):
    """A payment of an invoice (``invoice_payment.paid``); no customer: the invoice's."""

    type: Literal["invoice_payment.paid"]
    invoice_payment: InvoicePayment


class RefundEvent(Envelope):
    type: RefundEventType
    refund: Refund


class CheckoutEvent(Envelope):
    """A paid checkout in payment mode whose metadata names a one-off purchase
    (``PURCHASE_KEYS``) carries a customer and, if any, a valid ``quantity``."""

    model_config = ConfigDict(
        json_schema_extra=_purchase_schema(
            "checkout", {"mode": {"const": "payment"}, "payment_status": {"const": "paid"}}
        )
    )

    type: Literal["checkout.completed"]
    checkout: Checkout

    @model_validator(mode="after")
    def _purchase(self) -> Self:
        checkout = self.checkout
        if (
            checkout.mode == "payment"
            and checkout.payment_status == "paid"
            and _names_purchase(checkout.metadata)
        ):
            _purchase_needs(self.customer_id, checkout.metadata)
        return self


class CustomerEvent(Envelope):
    type: CustomerEventType
    customer: Customer


class EntitlementSummaryEvent(Envelope):
    type: Literal["entitlement_summary.updated"]
    customer_id: RequiredId = Field(
        description="Stripe customer id; also the Kafka key. Required: the summary is its "
        "active set."
    )
    summary: EntitlementSummary


BillingEvent = Annotated[
    SubscriptionEvent
    | InvoiceEvent
    | PaymentEvent
    | DisputeEvent
    | RefundEvent
    | CheckoutEvent
    | CustomerEvent
    | EntitlementSummaryEvent
    | InvoicePaymentEvent,
    Field(discriminator="type"),
]
"""Any event on ``billing.events.v1``; ``type`` selects the model."""

billing_event_adapter: TypeAdapter[BillingEvent] = TypeAdapter(BillingEvent)


def event_types(union: Any) -> frozenset[str]:
    """Every ``type`` value of a discriminated union of event models (``Annotated``)."""
    return frozenset(
        value
        for model in get_args(get_args(union)[0])
        for value in get_args(model.model_fields["type"].annotation)
    )


BILLING_EVENT_TYPES: Final[frozenset[str]] = event_types(BillingEvent)
"""Every ``type`` an event on ``billing.events.v1`` may have today (new ones are added)."""


def parse_billing_event(data: bytes | str) -> BillingEvent:
    """Parse a ``billing.events.v1`` message value (raises ``pydantic.ValidationError``)."""
    return billing_event_adapter.validate_json(data)
