"""The invoice worker's rows, one NamedTuple per ledger table (no I/O).

Each row's fields are its table's columns (``updated_at`` aside), the *content* first and
the marks of the events applied to it last: ``content(row)`` is what an ``invoices.v1``
event shows and what decides whether an event changed the row. NamedTuples, not
dataclasses: a batch builds thousands, and ``_replace`` and comparison stay tuple-cheap.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from workers.customers import user_of


class Mark(NamedTuple):
    """Position of an event in an object's history (see ``rules``): compared field by
    field, so a higher status rank wins over any time."""

    status_rank: int
    at: datetime
    rank: int
    event_id: str


Lines = list[dict[str, Any]]
"""JSON objects (``contracts.InvoiceLine`` dumped in JSON mode), as the jsonb column holds."""


class InvoiceRow(NamedTuple):
    invoice_id: str
    customer_id: str | None
    account: str
    livemode: bool
    number: str | None
    status: str | None
    currency: str
    subtotal: int | None
    discount: int | None
    tax: int | None
    total: int
    amount_due: int
    amount_paid: int
    amount_remaining: int
    billing_reason: str | None
    subscription_id: str | None
    payment_intent_id: str | None
    charge_id: str | None
    attempt_count: int
    next_payment_attempt: datetime | None
    due_date: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    paid_at: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    customer_email: str | None
    lines: Lines
    created_at: datetime
    mark: Mark


class PaymentRow(NamedTuple):
    payment_id: str
    customer_id: str | None
    account: str
    livemode: bool
    payment_intent_id: str | None
    charge_id: str | None
    invoice_id: str | None
    status: str
    amount: int
    amount_captured: int | None
    amount_refunded: int
    currency: str
    failure_code: str | None
    failure_message: str | None
    payment_method_type: str | None
    card_brand: str | None
    card_last4: str | None
    receipt_url: str | None
    description: str | None
    created_at: datetime
    succeeded_at: datetime | None
    mark: Mark
    charge_mark: Mark | None
    """The event ``charge_id``, ``amount_refunded`` and ``CHARGE_FIELDS`` come from: the
    greatest that carried the charge's details, else the greatest that named a charge
    (``rules.merge_payment``); None while no event named one."""


class RefundRow(NamedTuple):
    refund_id: str
    payment_id: str | None
    charge_id: str | None
    payment_intent_id: str | None
    customer_id: str | None
    account: str
    amount: int
    currency: str
    status: str | None
    reason: str | None
    created_at: datetime
    mark: Mark


class DisputeRow(NamedTuple):
    dispute_id: str
    payment_id: str | None
    charge_id: str | None
    payment_intent_id: str | None
    customer_id: str | None
    account: str
    amount: int
    currency: str
    reason: str | None
    status: str
    amount_withdrawn: int
    amount_reinstated: int
    evidence_due_by: datetime | None
    created_at: datetime
    mark: Mark


class InvoicePaymentRow(NamedTuple):
    """Which payment paid which invoice (``invoice_payment.paid``): kept, since either may
    come after it; it emits nothing of its own."""

    invoice_payment_id: str
    invoice_id: str
    payment_intent_id: str | None
    charge_id: str | None
    account: str
    amount_paid: int | None
    currency: str
    status: str
    mark: Mark


class SubscriptionRow(NamedTuple):
    subscription_id: str
    customer_id: str
    account: str
    livemode: bool
    status: str
    items: list[dict[str, Any]]
    price_id: str | None
    product_id: str | None
    quantity: int | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_at: datetime | None
    trial_start: datetime | None
    trial_end: datetime | None
    created_at: datetime
    mark: Mark


class CustomerRow(NamedTuple):
    customer_id: str
    metadata_user_id: str | None = None
    email: str | None = None
    name: str | None = None
    deleted: bool = False
    mark: Mark | None = None
    """Of the newest customer.* event that said who the customer is (status rank 0)."""
    checkout_user_id: str | None = None
    checkout_mark: Mark | None = None

    @property
    def user_id(self) -> str | None:
        """The application user: metadata wins over checkout (``user_of``)."""
        return user_of(self.metadata_user_id, self.checkout_user_id)[0]


class ReceiptRow(NamedTuple):
    number: str
    account: str
    livemode: bool
    prefix: str
    year: int
    sequence: int
    payment_id: str
    customer_id: str | None
    amount: int
    currency: str
    paid_at: datetime
    issued_at: datetime


LedgerRow = InvoiceRow | PaymentRow | RefundRow | DisputeRow


def content(
    row: InvoiceRow | PaymentRow | RefundRow | DisputeRow | SubscriptionRow,
) -> tuple[Any, ...]:
    """The row without its marks: what an event shows, and what a change is."""
    if isinstance(row, PaymentRow):
        return row[:-2]
    return row[:-1]
