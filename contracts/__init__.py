"""billing-fleet's public vocabulary: event models, topic names, parse functions, the
CloudEvents header builder, and the shipped JSON Schemas and AsyncAPI document.

Downstream services may depend on this package alone (the ``billing-fleet-contracts``
wheel, which needs only pydantic)::

    from contracts import BILLING_EVENTS, parse_billing_event

``__all__`` is that vocabulary. The workers' fast paths (``entitlements.change_id_text``,
``entitlements.entitlement_change_json``, ``ledger.ledger_event_id_text``) and the checks
behind the schemas stay in their submodules: importable, but not part of it.
"""

from contracts.documents import asyncapi_document, json_schema
from contracts.entitlements import (
    EntitlementChange,
    EntitlementChangeType,
    change_id_for,
    entitlement_change_adapter,
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
    Refund,
    RefundEvent,
    Subscription,
    SubscriptionEvent,
    SubscriptionItem,
    billing_event_adapter,
    event_id_for,
    parse_billing_event,
)
from contracts.headers import cloudevent_headers, cloudevent_kafka_headers
from contracts.ledger import (
    LEDGER_EVENT_TYPES,
    LedgerDispute,
    LedgerDisputeEvent,
    LedgerEvent,
    LedgerInvoice,
    LedgerInvoiceEvent,
    LedgerPayment,
    LedgerPaymentEvent,
    LedgerRefund,
    LedgerRefundEvent,
    Receipt,
    ReceiptIssuedEvent,
    ledger_event_adapter,
    ledger_event_id,
    parse_ledger_event,
)
from contracts.topics import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES, dead_letter_topic
from contracts.version import __version__ as __version__

__all__ = [
    "BILLING_EVENTS",
    "BILLING_EVENT_TYPES",
    "ENTITLEMENT_CHANGES",
    "INVOICES",
    "LEDGER_EVENT_TYPES",
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
    "EntitlementChangeType",
    "EntitlementSummary",
    "EntitlementSummaryEvent",
    "EventSource",
    "Invoice",
    "InvoiceEvent",
    "InvoiceLine",
    "LedgerDispute",
    "LedgerDisputeEvent",
    "LedgerEvent",
    "LedgerInvoice",
    "LedgerInvoiceEvent",
    "LedgerPayment",
    "LedgerPaymentEvent",
    "LedgerRefund",
    "LedgerRefundEvent",
    "PauseCollection",
    "Payment",
    "PaymentEvent",
    "Receipt",
    "ReceiptIssuedEvent",
    "Refund",
    "RefundEvent",
    "Subscription",
    "SubscriptionEvent",
    "SubscriptionItem",
    "asyncapi_document",
    "billing_event_adapter",
    "change_id_for",
    "cloudevent_headers",
    "cloudevent_kafka_headers",
    "dead_letter_topic",
    "entitlement_change_adapter",
    "event_id_for",
    "json_schema",
    "ledger_event_adapter",
    "ledger_event_id",
    "parse_billing_event",
    "parse_entitlement_change",
    "parse_ledger_event",
]
