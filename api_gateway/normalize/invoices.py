"""``invoice.*`` → ``Invoice``."""

from __future__ import annotations

from pydantic import ValidationError

from api_gateway.normalize.errors import refused
from api_gateway.normalize.fields import Reader
from api_gateway.normalize.prices import price_of
from contracts import Invoice, InvoiceLine


def _status(inv: Reader) -> str | None:
    status = inv.opt_str("status")
    if status is not None:
        return status
    # Before 2018 invoices had no status, only booleans: forgiven is today's
    # uncollectible; an unpaid invoice (closed or not) is still owed, i.e. open.
    paid = inv.opt_bool("paid")
    if paid:
        return "paid"
    if inv.flag("forgiven"):
        return "uncollectible"
    if paid is False:
        return "open"
    return None


def _subscription_id(inv: Reader) -> str | None:
    if inv.has("subscription"):
        return inv.ref("subscription")
    # 2025-03-31.basil moved it under the invoice's parent.
    parent = inv.child("parent")
    details = parent.child("subscription_details") if parent is not None else None
    return details.ref("subscription") if details is not None else None


def _payment_refs(inv: Reader) -> tuple[str | None, str | None]:
    """(payment intent id, charge id) of the invoice's payment."""
    intent, charge = inv.loose_ref("payment_intent"), inv.loose_ref("charge")
    if intent is not None or charge is not None:
        return intent, charge
    # basil removed both; an expanded ``payments`` list (InvoicePayment objects) links them.
    payments = inv.list_of("payments")
    default = [p for p in payments if p.flag("is_default")]
    for entry in default + payments:
        payment = entry.child("payment")
        if payment is None:
            continue
        intent, charge = payment.loose_ref("payment_intent"), payment.loose_ref("charge")
        if intent is not None or charge is not None:
            return intent, charge
    return None, None


def _line(line: Reader) -> InvoiceLine:
    price = price_of(line)
    try:
        return InvoiceLine(
            price_id=price.price_id,
            product_id=price.product_id,
            quantity=line.opt_int("quantity"),
            amount=line.int_or("amount", 0),
            description=line.opt_str("description"),
        )
    except ValidationError as exc:
        raise refused(exc, line.path) from exc


def invoice(inv: Reader) -> Invoice:
    status = _status(inv)
    amount_due = inv.req_int("amount_due")
    # Pre-2018 invoices lack amount_paid/amount_remaining: a paid one was paid in full.
    amount_paid = inv.int_or("amount_paid", amount_due if status == "paid" else 0)
    intent_id, charge_id = _payment_refs(inv)
    return Invoice(
        id=inv.req_str("id"),
        number=inv.opt_str("number"),
        status=status,
        currency=inv.req_str("currency"),
        total=inv.int_or("total", amount_due),
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=inv.int_or("amount_remaining", max(amount_due - amount_paid, 0)),
        subscription_id=_subscription_id(inv),
        billing_reason=inv.opt_str("billing_reason"),
        payment_intent_id=intent_id,
        charge_id=charge_id,
        attempt_count=inv.int_or("attempt_count", 0),
        next_payment_attempt=inv.opt_time("next_payment_attempt"),
        due_date=inv.opt_time("due_date"),
        period_start=inv.opt_time("period_start"),
        period_end=inv.opt_time("period_end"),
        hosted_invoice_url=inv.opt_str("hosted_invoice_url"),
        invoice_pdf=inv.opt_str("invoice_pdf"),
        customer_email=inv.opt_str("customer_email"),
        lines=[_line(line) for line in inv.list_of("lines")],
    )
