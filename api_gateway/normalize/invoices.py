"""``invoice.*`` → ``Invoice``."""

from __future__ import annotations

from datetime import datetime

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


def _sum_of_amounts(inv: Reader, key: str) -> int | None:
    """The sum of ``amount`` over the list at ``key``; None when the list is absent."""
    if not inv.has(key):
        return None
    return sum(item.req_int("amount") for item in inv.list_of(key))


def _discount(inv: Reader) -> int | None:
    # The legacy ``discount`` object describes a coupon (percent or amount off a price),
    # not what this invoice was discounted: without total_discount_amounts it is unknown.
    return _sum_of_amounts(inv, "total_discount_amounts")


def _tax(inv: Reader) -> int | None:
    tax = inv.opt_int("tax")
    if tax is not None:
        return tax
    # basil replaced ``tax`` and ``total_tax_amounts`` with ``total_taxes``.
    for key in ("total_taxes", "total_tax_amounts"):
        total = _sum_of_amounts(inv, key)
        if total is not None:
            return total
    return None


def _paid_at(inv: Reader) -> datetime | None:
    transitions = inv.child("status_transitions")
    return transitions.opt_time("paid_at") if transitions is not None else None


def _unit_amount(line: Reader, currency: str) -> int | None:
    """The unit amount of the line's price (or legacy plan), in the invoice's currency."""
    for key, amount_key in (("price", "unit_amount"), ("plan", "amount")):
        if not line.has(key):
            continue
        price = line.expanded(key)
        if price is None:
            return None  # only an id
        price_currency = price.opt_str("currency")
        if price_currency is None or price_currency.lower() == currency.lower():
            return price.opt_int(amount_key)
        # A multi-currency price has its default currency's amount at the top level and
        # the others' under currency_options.
        options = price.child("currency_options")
        option = options.child(currency.lower()) if options is not None else None
        return option.opt_int("unit_amount") if option is not None else None
    # basil+ lines carry no price object, only ``pricing`` (a decimal string).
    pricing = line.child("pricing")
    return pricing.opt_whole_decimal("unit_amount_decimal") if pricing is not None else None


def _line_id(line: Reader) -> str | None:
    # Before 2019-12-03 line ids had per-source prefixes; versions shortly before it carry
    # the line's own il_ id as ``unique_id``. Before 2018-05-21 a subscription line's id
    # was its subscription's id: that names no line.
    unique_id = line.opt_str("unique_id")
    if unique_id:
        return unique_id
    line_id = line.opt_str("id")
    if line.get("type") == "subscription" and line_id is not None and line_id.startswith("sub_"):
        return None
    return line_id


def _line(line: Reader, currency: str) -> InvoiceLine:
    price = price_of(line)
    period = line.child("period")
    try:
        return InvoiceLine(
            price_id=price.price_id,
            product_id=price.product_id,
            quantity=line.opt_int("quantity"),
            amount=line.int_or("amount", 0),
            description=line.opt_str("description"),
            id=_line_id(line),
            unit_amount=_unit_amount(line, currency),
            period_start=period.opt_time("start") if period is not None else None,
            period_end=period.opt_time("end") if period is not None else None,
        )
    except ValidationError as exc:
        raise refused(exc, line.path) from exc


def invoice(inv: Reader) -> Invoice:
    status = _status(inv)
    amount_due = inv.req_int("amount_due")
    # Pre-2018 invoices lack amount_paid/amount_remaining: a paid one was paid in full.
    amount_paid = inv.int_or("amount_paid", amount_due if status == "paid" else 0)
    intent_id, charge_id = _payment_refs(inv)
    currency = inv.req_str("currency")
    return Invoice(
        id=inv.req_str("id"),
        number=inv.opt_str("number"),
        status=status,
        currency=currency,
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
        lines=[_line(line, currency) for line in inv.list_of("lines")],
        # 2019-03-14 renamed ``date`` to ``created``.
        created_at=inv.opt_time("created") or inv.opt_time("date"),
        subtotal=inv.opt_int("subtotal"),
        discount=_discount(inv),
        tax=_tax(inv),
        paid_at=_paid_at(inv),
    )
