"""``refund.*`` and ``charge.refund.updated`` → ``Refund``; a charge's listed refunds."""

from __future__ import annotations

from pydantic import ValidationError

from api_gateway.normalize.errors import refused
from api_gateway.normalize.fields import Reader
from contracts import Refund


def refund(
    obj: Reader,
    *,
    charge_id: str | None = None,
    intent_id: str | None = None,
    currency: str | None = None,
) -> Refund:
    """A refund object; a refund listed under a charge takes what it omits from the charge
    (it refunds that charge, in its currency)."""
    currency = obj.opt_str("currency") or currency
    return Refund(
        id=obj.req_str("id"),
        charge_id=obj.ref("charge") or charge_id,
        payment_intent_id=obj.ref("payment_intent") or intent_id,
        amount=obj.req_int("amount"),
        # (req_str only to name the field when neither says)
        currency=currency or obj.req_str("currency"),
        status=obj.opt_str("status"),
        reason=obj.opt_str("reason"),
        created_at=obj.opt_time("created"),
    )


def refunds_of(charge: Reader) -> list[Refund]:
    """The refunds a charge lists: until 2022-11-15 ``refunds`` is always there (a list, or
    an array in the oldest versions); since then only when expanded, else empty."""
    charge_id = charge.opt_str("id")
    intent_id = charge.loose_ref("payment_intent")  # as the charge's Payment reads it
    currency = charge.opt_str("currency")
    found: list[Refund] = []
    for item in charge.list_of("refunds"):
        try:
            found.append(refund(item, charge_id=charge_id, intent_id=intent_id, currency=currency))
        except ValidationError as exc:
            raise refused(exc, item.path) from exc
    return found


def refund_customer(obj: Reader) -> str | None:
    """The refund's own ``customer`` (newer versions), else its expanded charge's."""
    customer = obj.ref("customer")
    if customer is not None:
        return customer
    charge = obj.expanded("charge")
    return charge.ref("customer") if charge is not None else None
