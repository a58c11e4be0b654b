"""billing-fleet's public vocabulary: event models, topic names and headers.

Downstream services may depend on this package alone::

    from contracts import BILLING_EVENTS, parse_billing_event
"""

from contracts.entitlements import (
    EntitlementChange,
    change_id_for,
    change_id_text,
    entitlement_change_adapter,
    entitlement_change_json,
    parse_entitlement_change,
)
from contracts.events import (
    BILLING_EVENT_TYPES,
    ActiveEntitlement,
    BillingEvent,
    Cancellation,
    Checkout,
    CheckoutEvent,
    Customer,
    CustomerEvent,
    Dispute,
    DisputeEvent,
    EntitlementSummary,
    EntitlementSummaryEvent,
    EventSource,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    PauseCollection,
    Payment,
    PaymentEvent,
    Subscription,
    SubscriptionEvent,
    SubscriptionItem,
    billing_event_adapter,
    event_id_for,
    parse_billing_event,
)
from contracts.headers import cloudevent_headers
from contracts.topics import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES, dead_letter_topic

__all__ = [
    "BILLING_EVENTS",
    "BILLING_EVENT_TYPES",
    "ENTITLEMENT_CHANGES",
    "INVOICES",
    "ActiveEntitlement",
    "BillingEvent",
    "Cancellation",
    "Checkout",
    "CheckoutEvent",
    "Customer",
    "CustomerEvent",
    "Dispute",
    "DisputeEvent",
    "EntitlementChange",
    "EntitlementSummary",
    "EntitlementSummaryEvent",
    "EventSource",
    "Invoice",
    "InvoiceEvent",
    "InvoiceLine",
    "PauseCollection",
    "Payment",
    "PaymentEvent",
    "Subscription",
    "SubscriptionEvent",
    "SubscriptionItem",
    "billing_event_adapter",
    "change_id_for",
    "change_id_text",
    "cloudevent_headers",
    "dead_letter_topic",
    "entitlement_change_adapter",
    "entitlement_change_json",
    "event_id_for",
    "parse_billing_event",
    "parse_entitlement_change",
]
