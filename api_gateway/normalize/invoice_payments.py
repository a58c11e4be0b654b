"""``invoice_payment.paid`` → ``InvoicePayment``: which payment paid an invoice.

Since 2025-03-31.basil an invoice no longer names its ``payment_intent`` or ``charge``,
nor they their ``invoice``; Stripe links them with ``InvoicePayment`` objects (an expanded
``invoice.payments`` list, or this event). Its ``payment`` names an intent or, for a
charge without one, the charge (``type`` ``payment_intent`` / ``charge``; an out-of-band
payment names neither).
"""

from __future__ import annotations

from api_gateway.normalize.fields import Reader
from contracts import InvoicePayment


def invoice_payment(obj: Reader) -> InvoicePayment:
    payment = obj.child("payment")
    return InvoicePayment(
        id=obj.req_str("id"),
        # The invoice may come expanded; without one the link names nothing (a 422).
        invoice_id=obj.ref("invoice") or obj.req_str("invoice"),
        payment_intent_id=payment.loose_ref("payment_intent") if payment is not None else None,
        charge_id=payment.loose_ref("charge") if payment is not None else None,
        amount_paid=obj.opt_int("amount_paid"),
        currency=obj.req_str("currency"),
        status=obj.req_str("status"),
    )
