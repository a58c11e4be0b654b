"""What each notice tells, as its templates see it (amounts in minor units, times aware).

Every kind has ``samples()``: one value with every optional field set and one with none,
which ``templates.check_templates`` renders each template with at startup, so a template
that names a field a real notice lacks fails there and not on a customer's mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

_SAMPLE_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LineFacts:
    description: str | None
    quantity: int | None
    amount: int


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    number: str
    amount: int
    currency: str
    paid_at: datetime
    invoice_number: str | None
    description: str | None
    lines: tuple[LineFacts, ...]
    hosted_invoice_url: str | None
    pdf_url: str | None
    """Our receipt PDF (``notification_receipt_url`` with the number), when configured."""
    payment_method_type: str | None
    card_brand: str | None
    card_last4: str | None

    @staticmethod
    def samples() -> list[ReceiptFacts]:
        full = ReceiptFacts(
            number="R-2026-000123",
            amount=2380,
            currency="eur",
            paid_at=_SAMPLE_AT,
            invoice_number="INV-0042",
            description="Pro plan",
            lines=(
                LineFacts("Pro plan", 1, 2000),
                LineFacts("Extra seat", 2, 380),
                LineFacts(None, None, 0),
            ),
            hosted_invoice_url="https://invoice.stripe.test/i/1",
            pdf_url="https://api.example.com/v1/receipts/R-2026-000123.pdf",
            payment_method_type="card",
            card_brand="visa",
            card_last4="4242",
        )
        bare = ReceiptFacts(
            number="R-2026-000124",
            amount=1500,
            currency="jpy",
            paid_at=_SAMPLE_AT,
            invoice_number=None,
            description=None,
            lines=(),
            hosted_invoice_url=None,
            pdf_url=None,
            payment_method_type=None,
            card_brand=None,
            card_last4=None,
        )
        return [full, bare]


@dataclass(frozen=True, slots=True)
class PaymentFailedFacts:
    invoice_id: str
    invoice_number: str | None
    amount_due: int
    currency: str
    attempt_count: int
    next_payment_attempt: datetime | None
    """When Stripe retries; None: no automatic retry is planned."""
    update_url: str | None
    """Where the customer pays or updates the card: Stripe's hosted invoice page."""

    @staticmethod
    def samples() -> list[PaymentFailedFacts]:
        return [
            PaymentFailedFacts(
                invoice_id="in_sample",
                invoice_number="INV-0042",
                amount_due=1234,
                currency="kwd",
                attempt_count=2,
                next_payment_attempt=_SAMPLE_AT,
                update_url="https://invoice.stripe.test/i/1",
            ),
            PaymentFailedFacts(
                invoice_id="in_sample",
                invoice_number=None,
                amount_due=0,
                currency="usd",
                attempt_count=0,
                next_payment_attempt=None,
                update_url=None,
            ),
        ]


@dataclass(frozen=True, slots=True)
class SubscriptionFacts:
    """A subscription's trial end, scheduled end or end (``ends_at``: the moment the notice
    is about, None when Stripe did not say)."""

    subscription_id: str
    status: str
    ends_at: datetime | None
    plans: tuple[str, ...]
    """The items' lookup keys (else price ids): names the templates may show."""

    @staticmethod
    def samples() -> list[SubscriptionFacts]:
        return [
            SubscriptionFacts("sub_sample", "trialing", _SAMPLE_AT, ("pro_monthly", "seats")),
            SubscriptionFacts("sub_sample", "canceled", None, ()),
        ]


@dataclass(frozen=True, slots=True)
class AccessFacts:
    feature: str
    limit: int | None
    expires_at: datetime | None

    @staticmethod
    def samples() -> list[AccessFacts]:
        return [AccessFacts("api_calls", 1000, _SAMPLE_AT), AccessFacts("sso", None, None)]


Facts = ReceiptFacts | PaymentFailedFacts | SubscriptionFacts | AccessFacts
