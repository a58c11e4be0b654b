"""What a receipt shows: the typed context its template renders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from workers.invoice.settings import InvoiceSettings

# How receipts name the card brands Stripe sends (payment_method_details.card.brand);
# another brand is shown as Stripe spells it, capitalized.
CARD_BRANDS: Final = {
    "amex": "American Express",
    "cartes_bancaires": "Cartes Bancaires",
    "diners": "Diners Club",
    "discover": "Discover",
    "eftpos_au": "eftpos",
    "interac": "Interac",
    "jcb": "JCB",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "visa": "Visa",
}
MASK: Final = "\u2022\u2022\u2022\u2022"  # four bullets before the last four digits


@dataclass(frozen=True, slots=True)
class Seller:
    name: str
    address_lines: tuple[str, ...] = ()
    tax_id: str | None = None

    @classmethod
    def from_settings(cls, settings: InvoiceSettings) -> Seller:
        lines = tuple(line.strip() for line in settings.invoice_seller_address.split("\n"))
        return cls(
            settings.invoice_seller_name,
            tuple(line for line in lines if line),
            settings.invoice_seller_tax_id.strip() or None,
        )


@dataclass(frozen=True, slots=True)
class LineItem:
    """One line of the invoice a payment paid; amounts in the receipt's currency."""

    amount: int
    description: str | None = None
    quantity: int | None = None
    unit_amount: int | None = None


@dataclass(frozen=True, slots=True)
class ReceiptDocument:
    """One receipt as its template sees it (``receipt`` in the template).

    Amounts are minor units in ``currency`` (the template's ``money`` filter writes
    them); ``lines`` is empty unless the payment paid an invoice whose lines are known,
    and ``subtotal``, ``discount`` and ``tax`` are that invoice's when it has them.
    """

    number: str
    paid_at: datetime
    amount: int
    currency: str
    seller: Seller
    customer_name: str | None = None
    customer_email: str | None = None
    payment_method_type: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    invoice_number: str | None = None
    description: str | None = None
    lines: tuple[LineItem, ...] = ()
    subtotal: int | None = None
    discount: int | None = None
    tax: int | None = None

    @property
    def payment_method(self) -> str | None:
        """``Visa •••• 4242``, the brand or the method type alone, or None."""
        brand = self.card_brand and CARD_BRANDS.get(self.card_brand, _spoken(self.card_brand))
        if brand and self.card_last4:
            return f"{brand} {MASK} {self.card_last4}"
        if brand:
            return brand
        return _spoken(self.payment_method_type) if self.payment_method_type else None


def _spoken(code: str) -> str:
    """``sepa_debit`` as ``Sepa debit``."""
    return code.replace("_", " ").strip().capitalize()


def sample_documents() -> tuple[ReceiptDocument, ...]:
    """A receipt with every field set and one with only what is always known: what
    ``check_templates`` renders each template with, so both branches of every
    ``{% if %}`` on an optional field are tried."""
    paid_at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    full = ReceiptDocument(
        number="R-2026-000001",
        paid_at=paid_at,
        amount=2380,
        currency="eur",
        seller=Seller("Example GmbH", ("Example Street 1", "10115 Berlin"), "DE123456789"),
        customer_name="Ada Lovelace",
        customer_email="ada@example.com",
        payment_method_type="card",
        card_brand="visa",
        card_last4="4242",
        invoice_number="INV-0001",
        description="Subscription update",
        lines=(
            LineItem(2000, "Pro plan (monthly)", 1, 2000),
            LineItem(0, None, None, None),
        ),
        subtotal=2000,
        discount=0,
        tax=380,
    )
    minimal = ReceiptDocument(
        number="R-2026-000002",
        paid_at=paid_at,
        amount=1500,
        currency="jpy",
        seller=Seller("Example"),
    )
    return full, minimal
