"""Stripe event → ``contracts.BillingEvent``: the only place that knows Stripe's shapes.

``normalize`` accepts any JSON-parsed dict and either returns a contract event or raises
one of two exceptions the ingress turns into an answer for Stripe:
``UnhandledEventType`` (200, counted) or ``UnmappableEvent`` (422, Stripe retries). A
value the contract refuses (what no worker could apply) is an ``UnmappableEvent`` naming
the Stripe object's path, the contract's field and why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

import contracts
from api_gateway.normalize import (
    checkout,
    customers,
    disputes,
    entitlements,
    invoice_payments,
    invoices,
    payments,
    refunds,
)
from api_gateway.normalize.errors import UnhandledEventType, UnmappableEvent, refused
from api_gateway.normalize.fields import Reader, to_datetime
from api_gateway.normalize.subscriptions import subscription

__all__ = [
    "HANDLED_TYPES",
    "UnhandledEventType",
    "UnmappableEvent",
    "normalize",
    "partition_key",
]

# A mapper gets (stripe type, data.object, data.previous_attributes) and returns the
# payload's field name on the envelope, the payload, and the customer id.
_Mapped = tuple[str, BaseModel, str | None]
_Mapper = Callable[[str, Reader, Reader | None], _Mapped]


def _subscription(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    return "subscription", subscription(obj, kind, prev), obj.ref("customer")


def _invoice(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    return "invoice", invoices.invoice(obj), obj.ref("customer")


def _invoice_payment(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    # An InvoicePayment names no customer (its invoice does): keyed by the invoice.
    return "invoice_payment", invoice_payments.invoice_payment(obj), None


def _charge(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    return "payment", payments.from_charge(obj), obj.ref("customer")


def _payment_intent(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    return "payment", payments.from_payment_intent(obj), obj.ref("customer")


def _dispute(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    return "dispute", disputes.dispute(obj), disputes.dispute_customer(obj)


def _refund(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    return "refund", refunds.refund(obj), refunds.refund_customer(obj)


def _checkout(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    return "checkout", checkout.checkout(obj), obj.ref("customer")


def _customer(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    payload = customers.customer(obj, kind)
    return "customer", payload, payload.id


def _summary(kind: str, obj: Reader, prev: Reader | None) -> _Mapped:
    # Without the customer the summary applies to no one.
    return "summary", entitlements.summary(obj), obj.req_str("customer")


_ROUTES: dict[str, tuple[str, _Mapper]] = {
    "customer.subscription.created": ("subscription.activated", _subscription),
    "customer.subscription.updated": ("subscription.updated", _subscription),
    "customer.subscription.deleted": ("subscription.canceled", _subscription),
    "customer.subscription.paused": ("subscription.paused", _subscription),
    "customer.subscription.resumed": ("subscription.resumed", _subscription),
    "customer.subscription.trial_will_end": ("subscription.trial_will_end", _subscription),
    "customer.subscription.pending_update_applied": ("subscription.updated", _subscription),
    "customer.subscription.pending_update_expired": ("subscription.updated", _subscription),
    "invoice.created": ("invoice.created", _invoice),
    "invoice.finalized": ("invoice.finalized", _invoice),
    "invoice.paid": ("invoice.paid", _invoice),
    # Stripe sends both invoice.paid and invoice.payment_succeeded for one payment; both
    # become invoice.paid and consumers key their effects by invoice id, so it counts once.
    "invoice.payment_succeeded": ("invoice.paid", _invoice),
    "invoice.payment_failed": ("invoice.payment_failed", _invoice),
    "invoice.voided": ("invoice.voided", _invoice),
    "invoice.marked_uncollectible": ("invoice.marked_uncollectible", _invoice),
    # Since basil the only link between an invoice and the payment that paid it.
    "invoice_payment.paid": ("invoice_payment.paid", _invoice_payment),
    "charge.succeeded": ("payment.succeeded", _charge),
    "charge.failed": ("payment.failed", _charge),
    "charge.refunded": ("payment.refunded", _charge),
    "payment_intent.succeeded": ("payment.succeeded", _payment_intent),
    "payment_intent.payment_failed": ("payment.failed", _payment_intent),
    "charge.dispute.created": ("dispute.opened", _dispute),
    "charge.dispute.updated": ("dispute.updated", _dispute),
    "charge.dispute.funds_reinstated": ("dispute.updated", _dispute),
    "charge.dispute.funds_withdrawn": ("dispute.updated", _dispute),
    "charge.dispute.closed": ("dispute.closed", _dispute),
    "refund.created": ("refund.created", _refund),
    "refund.updated": ("refund.updated", _refund),
    "refund.failed": ("refund.failed", _refund),
    # Stripe's older refund-update event: the same Refund object; consumers key by its id.
    "charge.refund.updated": ("refund.updated", _refund),
    "checkout.session.completed": ("checkout.completed", _checkout),
    # For delayed methods (SEPA, bank transfer) completed arrives unpaid and this follows
    # once the money is in; consumers key by session id.
    "checkout.session.async_payment_succeeded": ("checkout.completed", _checkout),
    "customer.created": ("customer.created", _customer),
    "customer.updated": ("customer.updated", _customer),
    "customer.deleted": ("customer.deleted", _customer),
    "entitlements.active_entitlement_summary.updated": ("entitlement_summary.updated", _summary),
}

HANDLED_TYPES: frozenset[str] = frozenset(_ROUTES)
"""The Stripe event types ``normalize`` maps; every other type is ``UnhandledEventType``."""


def normalize(stripe_event: Mapping[str, Any]) -> contracts.BillingEvent:
    """Translate one parsed Stripe ``event`` object into its contract event."""
    try:
        return _normalize(stripe_event)
    except (UnhandledEventType, UnmappableEvent):
        raise
    except ValidationError as exc:  # the envelope: its customer, source, time
        raise refused(exc, "event") from exc
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise UnmappableEvent(f"{type(exc).__name__}: {exc}") from exc


def _normalize(stripe_event: Mapping[str, Any]) -> contracts.BillingEvent:
    event = Reader(stripe_event, "event")
    stripe_id = event.req_str("id")
    stripe_type = event.req_str("type")
    route = _ROUTES.get(stripe_type)
    if route is None:
        raise UnhandledEventType(stripe_type)
    our_type, mapper = route

    data = Reader(event.get("data"), "event.data")
    obj = Reader(data.get("object"), "event.data.object")
    try:
        field, payload, customer_id = mapper(stripe_type, obj, data.child("previous_attributes"))
    except ValidationError as exc:  # the payload (list elements name their own path)
        raise refused(exc, obj.path) from exc
    created = event.get("created")
    livemode = event.opt_bool("livemode")
    if livemode is None:
        raise UnmappableEvent("event.livemode: required boolean is missing")
    return contracts.billing_event_adapter.validate_python(
        {
            "id": contracts.event_id_for(stripe_id),
            "type": our_type,
            "occurred_at": to_datetime(created, "event.created"),
            "source": contracts.EventSource(
                stripe_event_id=stripe_id,
                stripe_event_type=stripe_type,
                api_version=event.opt_str("api_version"),
                livemode=livemode,
                account=event.opt_str("account"),
            ),
            "customer_id": customer_id,
            field: payload,
        }
    )


def partition_key(event: contracts.BillingEvent) -> str:
    """customer_id, or the payload object's id when the event has no customer."""
    if event.customer_id:
        return event.customer_id
    match event:
        case contracts.SubscriptionEvent():
            return event.subscription.id
        case contracts.InvoiceEvent():
            return event.invoice.id
        case contracts.PaymentEvent():
            return event.payment.id
        case contracts.DisputeEvent():
            # As a refund's: with the other customer-less events of its charge.
            return event.dispute.charge_id or event.dispute.id
        case contracts.RefundEvent():
            # Stable: every event of a refund (and of its charge's other refunds) shares it.
            return event.refund.charge_id or event.refund.id
        case contracts.CheckoutEvent():
            return event.checkout.id
        case contracts.CustomerEvent():
            return event.customer.id
        case contracts.InvoicePaymentEvent():
            # The invoice's id: with the events of a customer-less invoice.
            return event.invoice_payment.invoice_id
        case contracts.EntitlementSummaryEvent():
            # Unreachable: the contract requires a summary's customer.
            return str(event.id)
