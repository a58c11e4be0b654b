"""Price identity of a subscription item or invoice line, across API versions.

Newer objects carry ``price``; older ones ``plan`` (a plan id is what the legacy API used
as the price id); the newest invoice lines carry ``pricing.price_details`` instead. Each
may be an id string or an expanded object whose ``product`` is again a string or object.
"""

from __future__ import annotations

from typing import NamedTuple

from api_gateway.normalize.errors import UnmappableEvent
from api_gateway.normalize.fields import Reader


class PriceRef(NamedTuple):
    price_id: str | None
    product_id: str | None
    lookup_key: str | None
    product_metadata: dict[str, str]
    """The product's metadata when ``product`` is expanded; empty otherwise."""


NO_PRICE = PriceRef(None, None, None, {})


def price_of(holder: Reader) -> PriceRef:
    """Read ``price``, else ``plan``, else ``pricing.price_details`` of ``holder``."""
    for key in ("price", "plan"):
        if not holder.has(key):
            continue
        expanded = holder.expanded(key)
        if expanded is None:
            return PriceRef(holder.ref(key), None, None, {})
        product = expanded.expanded("product")
        return PriceRef(
            expanded.opt_str("id"),
            expanded.ref("product"),
            # Only prices have lookup keys; legacy plans never did.
            expanded.opt_str("lookup_key"),
            product.metadata() if product is not None else {},
        )
    pricing = holder.child("pricing")
    details = pricing.child("price_details") if pricing is not None else None
    if details is not None:
        return PriceRef(details.ref("price"), details.ref("product"), None, {})
    return NO_PRICE


def required_price_id(holder: Reader, price: PriceRef) -> str:
    """A subscription item's price id: without one no catalog can say what it grants."""
    if price.price_id is None:
        raise UnmappableEvent(f"{holder.path}: price (or plan) id is missing")
    return price.price_id
