"""The ledger read API's JSON shapes, for OpenAPI only.

The handlers answer the rows of ``ledger_store`` as JSON bytes without validating them
again (see ``access.py``); these models say what those rows hold. Money is integer minor
units beside its ISO 4217 ``currency`` (lower case, as Stripe sends it), on every object.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from contracts import InvoiceLine

RowT = TypeVar("RowT", bound=BaseModel)

_ACCOUNT = "The Stripe Connect account of the object; null: the platform's own."


class Page(BaseModel, Generic[RowT]):
    data: list[RowT] = Field(description="Newest first (`created_at`, then id, descending).")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null: this is the last page."
    )


class Invoice(BaseModel):
    id: str
    customer_id: str | None
    account: str | None = Field(description=_ACCOUNT)
    livemode: bool
    number: str | None = Field(description="Stripe's invoice number.")
    status: str | None = Field(description="draft, open, paid, uncollectible or void.")
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
    invoice_pdf: str | None = Field(description="Stripe's PDF of the invoice (a URL).")
    created_at: datetime
    updated_at: datetime


class InvoiceWithLines(Invoice):
    lines: list[InvoiceLine]


class Refund(BaseModel):
    id: str
    amount: int
    currency: str
    status: str | None
    reason: str | None
    created_at: datetime


class Dispute(BaseModel):
    id: str
    amount: int
    currency: str
    status: str
    reason: str | None
    amount_withdrawn: int
    amount_reinstated: int
    evidence_due_by: datetime | None
    created_at: datetime


class Payment(BaseModel):
    id: str = Field(description="The payment intent, or the charge of a payment without one.")
    customer_id: str | None
    account: str | None = Field(description=_ACCOUNT)
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
    description: str | None
    receipt_number: str | None = Field(description="Our receipt of a succeeded payment.")
    refunds: list[Refund] = Field(description="Oldest first.")
    disputes: list[Dispute] = Field(description="Oldest first.")
    created_at: datetime
    succeeded_at: datetime | None
    updated_at: datetime


class Subscription(BaseModel):
    id: str
    customer_id: str
    account: str | None = Field(description=_ACCOUNT)
    livemode: bool
    status: str
    items: list[dict[str, Any]] = Field(description="Price, product and quantity per item.")
    price_id: str | None = Field(description="The first item's.")
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
    updated_at: datetime


class Receipt(BaseModel):
    number: str = Field(description="`<prefix>-<year>-<sequence>`, gapless per year.")
    customer_id: str | None
    account: str | None = Field(description=_ACCOUNT)
    payment_id: str
    invoice_id: str | None
    invoice_number: str | None = Field(description="Stripe's number of the paid invoice.")
    amount: int
    currency: str
    amount_refunded: int = Field(description="Refunded of the payment since.")
    payment_method_type: str | None
    card_brand: str | None
    card_last4: str | None
    description: str | None
    paid_at: datetime
    issued_at: datetime
    pdf_ready: bool = Field(description="Whether `….pdf` serves the rendered receipt yet.")


InvoicePage = Page[Invoice]
PaymentPage = Page[Payment]
SubscriptionPage = Page[Subscription]
