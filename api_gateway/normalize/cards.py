"""How a charge was paid: the method's type and, for cards, brand and last four digits.

Nothing else of a card is read (no fingerprint, expiry, country, funding or checks), so
nothing else can reach the topic.
"""

from __future__ import annotations

from typing import NamedTuple

from api_gateway.normalize.fields import Reader

# payment_method_details types whose details carry a card's brand and last4.
_CARD_TYPES = frozenset({"card", "card_present", "interac_present"})

# Legacy card objects (a charge's ``source``, before payment_method_details) name the
# brand for display; payment_method_details uses these codes.
_LEGACY_BRANDS = {
    "American Express": "amex",
    "Cartes Bancaires": "cartes_bancaires",
    "Diners Club": "diners",
    "Discover": "discover",
    "Eftpos Australia": "eftpos_au",
    "JCB": "jcb",
    "MasterCard": "mastercard",
    "UnionPay": "unionpay",
    "Visa": "visa",
    "Unknown": "unknown",
}


class PaymentMethod(NamedTuple):
    type: str | None
    card_brand: str | None
    card_last4: str | None


UNKNOWN_METHOD = PaymentMethod(None, None, None)


def payment_method(charge: Reader) -> PaymentMethod:
    """From ``payment_method_details`` (2019+), else from a legacy card ``source``."""
    details = charge.child("payment_method_details")
    if details is not None:
        method_type = details.opt_str("type")
        card = details.child(method_type) if method_type in _CARD_TYPES else None
        if card is None:
            return PaymentMethod(method_type, None, None)
        return PaymentMethod(method_type, card.opt_str("brand"), card.opt_str("last4"))
    # Before 2015-02-18 the card sat under ``card``, later under ``source``.
    for key in ("source", "card"):
        legacy = charge.expanded(key)
        if legacy is not None and legacy.get("object") == "card":
            brand = legacy.opt_str("brand")
            return PaymentMethod(
                "card",
                _LEGACY_BRANDS.get(brand) if brand is not None else None,
                legacy.opt_str("last4"),
            )
    return UNKNOWN_METHOD
