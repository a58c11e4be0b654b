"""``charge.dispute.*`` → ``Dispute``."""

from __future__ import annotations

from api_gateway.normalize.fields import Reader
from contracts import Dispute


def dispute(obj: Reader) -> Dispute:
    charge = obj.expanded("charge")
    intent_id = obj.loose_ref("payment_intent")
    if intent_id is None and charge is not None:
        intent_id = charge.loose_ref("payment_intent")
    return Dispute(
        id=obj.req_str("id"),
        charge_id=obj.ref("charge"),
        payment_intent_id=intent_id,
        amount=obj.req_int("amount"),
        currency=obj.req_str("currency"),
        reason=obj.opt_str("reason"),
        status=obj.req_str("status"),
    )


def dispute_customer(obj: Reader) -> str | None:
    """Disputes carry no customer; an expanded charge does."""
    charge = obj.expanded("charge")
    return charge.ref("customer") if charge is not None else None
