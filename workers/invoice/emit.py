"""The ``invoices.v1`` records of ledger changes: body, key and CloudEvents headers.

Bodies are built as plain JSON (``pydantic_core.to_json``) from rows the worker already
typed, without validating them again (as ``entitlement_change_json`` does); a test parses
every one with ``contracts.parse_ledger_event`` and checks it against the committed schema.
The key is the row's customer, else the object's id (a receipt's: its payment's), so a
customer's ledger events stay in order on one partition. A refund or dispute without a
customer is keyed by its charge (else its own id), as the gateway keys its Stripe events
(``api_gateway.normalize.partition_key``): the events of one charge's refunds and disputes
stay on one partition until the payment's customer is known, and then go with the
customer's.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic_core import to_json

from contracts import INVOICES, BillingEvent, cloudevent_kafka_headers
from contracts.ledger import ledger_event_id_text
from workers.invoice.receipts import PendingReceipt
from workers.invoice.rows import DisputeRow, InvoiceRow, PaymentRow, ReceiptRow, RefundRow
from workers.runtime.spec import Outgoing

CE_SOURCE: Final = "/billing-fleet/invoice"


def _record(
    event_type: str,
    object_id: str,
    customer_id: str | None,
    account: str,
    cause: BillingEvent,
    payload_name: str,
    payload: dict[str, Any],
    key: str | None = None,
) -> Outgoing:
    stripe_id = cause.source.stripe_event_id
    event_id = ledger_event_id_text(event_type, object_id, stripe_id)
    body = to_json(
        {
            "id": event_id,
            "occurred_at": cause.occurred_at,
            "customer_id": customer_id,
            "account": account or None,
            "livemode": cause.source.livemode,
            "caused_by": stripe_id,
            "type": event_type,
            payload_name: payload,
        }
    )
    headers = cloudevent_kafka_headers(
        id=event_id, type=event_type, source=CE_SOURCE, time=cause.occurred_at, subject=customer_id
    )
    key = customer_id or key or object_id
    return Outgoing(topic=INVOICES, key=key, value=body, headers=headers)


def invoice_record(row: InvoiceRow, event_type: str, cause: BillingEvent) -> Outgoing:
    payload = {
        "id": row.invoice_id,
        "customer_id": row.customer_id,
        "number": row.number,
        "status": row.status,
        "currency": row.currency,
        "subtotal": row.subtotal,
        "discount": row.discount,
        "tax": row.tax,
        "total": row.total,
        "amount_due": row.amount_due,
        "amount_paid": row.amount_paid,
        "amount_remaining": row.amount_remaining,
        "billing_reason": row.billing_reason,
        "subscription_id": row.subscription_id,
        "payment_intent_id": row.payment_intent_id,
        "charge_id": row.charge_id,
        "attempt_count": row.attempt_count,
        "next_payment_attempt": row.next_payment_attempt,
        "due_date": row.due_date,
        "period_start": row.period_start,
        "period_end": row.period_end,
        "paid_at": row.paid_at,
        "hosted_invoice_url": row.hosted_invoice_url,
        "invoice_pdf": row.invoice_pdf,
        "customer_email": row.customer_email,
        "lines": row.lines,
        "created_at": row.created_at,
    }
    return _record(
        event_type, row.invoice_id, row.customer_id, row.account, cause, "invoice", payload
    )


def payment_record(row: PaymentRow, event_type: str, cause: BillingEvent) -> Outgoing:
    payload = {
        "id": row.payment_id,
        "customer_id": row.customer_id,
        "payment_intent_id": row.payment_intent_id,
        "charge_id": row.charge_id,
        "invoice_id": row.invoice_id,
        "status": row.status,
        "amount": row.amount,
        "amount_captured": row.amount_captured,
        "amount_refunded": row.amount_refunded,
        "currency": row.currency,
        "failure_code": row.failure_code,
        "failure_message": row.failure_message,
        "payment_method_type": row.payment_method_type,
        "card_brand": row.card_brand,
        "card_last4": row.card_last4,
        "receipt_url": row.receipt_url,
        "description": row.description,
        "created_at": row.created_at,
        "succeeded_at": row.succeeded_at,
    }
    return _record(
        event_type, row.payment_id, row.customer_id, row.account, cause, "payment", payload
    )


def refund_record(row: RefundRow, event_type: str, cause: BillingEvent) -> Outgoing:
    payload = {
        "id": row.refund_id,
        "payment_id": row.payment_id,
        "charge_id": row.charge_id,
        "payment_intent_id": row.payment_intent_id,
        "customer_id": row.customer_id,
        "amount": row.amount,
        "currency": row.currency,
        "status": row.status,
        "reason": row.reason,
        "created_at": row.created_at,
    }
    return _record(
        event_type,
        row.refund_id,
        row.customer_id,
        row.account,
        cause,
        "refund",
        payload,
        key=row.charge_id,
    )


def dispute_record(row: DisputeRow, event_type: str, cause: BillingEvent) -> Outgoing:
    payload = {
        "id": row.dispute_id,
        "payment_id": row.payment_id,
        "charge_id": row.charge_id,
        "payment_intent_id": row.payment_intent_id,
        "customer_id": row.customer_id,
        "amount": row.amount,
        "currency": row.currency,
        "reason": row.reason,
        "status": row.status,
        "amount_withdrawn": row.amount_withdrawn,
        "amount_reinstated": row.amount_reinstated,
        "evidence_due_by": row.evidence_due_by,
        "created_at": row.created_at,
    }
    return _record(
        event_type,
        row.dispute_id,
        row.customer_id,
        row.account,
        cause,
        "dispute",
        payload,
        key=row.charge_id,
    )


def receipt_record(receipt: ReceiptRow, pending: PendingReceipt) -> Outgoing:
    payment, invoice, customer = pending.payment, pending.invoice, pending.customer
    payload = {
        "number": receipt.number,
        "payment_id": receipt.payment_id,
        "invoice_id": payment.invoice_id,
        "invoice_number": invoice.number if invoice is not None else None,
        "customer_id": receipt.customer_id,
        "customer_email": customer.email if customer is not None else None,
        "customer_name": customer.name if customer is not None else None,
        "amount": receipt.amount,
        "currency": receipt.currency,
        "paid_at": receipt.paid_at,
        "issued_at": receipt.issued_at,
        "lines": invoice.lines if invoice is not None else [],
        "description": payment.description,
        "hosted_invoice_url": invoice.hosted_invoice_url if invoice is not None else None,
        "payment_method_type": payment.payment_method_type,
        "card_brand": payment.card_brand,
        "card_last4": payment.card_last4,
    }
    return _record(
        "receipt.issued",
        receipt.payment_id,
        receipt.customer_id,
        receipt.account,
        pending.cause,
        "receipt",
        payload,
    )
