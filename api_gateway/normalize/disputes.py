"""``charge.dispute.*`` → ``Dispute``."""

from __future__ import annotations

from api_gateway.normalize.fields import Reader
from contracts import Dispute


def _funds(obj: Reader, currency: str) -> tuple[int, int]:
    """(withdrawn, reinstated), both positive, from the dispute's balance transactions:
    a withdrawal is a negative amount, a reinstatement a positive one. Only expanded
    transactions in the dispute's currency count: a bare id says nothing, and one settled
    in another currency is not an amount of this one."""
    withdrawn = reinstated = 0
    for txn in obj.expanded_items("balance_transactions"):
        amount = txn.req_int("amount")
        txn_currency = txn.opt_str("currency")
        if txn_currency is None or txn_currency.lower() != currency.lower():
            continue
        if amount < 0:
            withdrawn -= amount
        else:
            reinstated += amount
    return withdrawn, reinstated


def dispute(obj: Reader) -> Dispute:
    charge = obj.expanded("charge")
    intent_id = obj.loose_ref("payment_intent")
    if intent_id is None and charge is not None:
        intent_id = charge.loose_ref("payment_intent")
    currency = obj.req_str("currency")
    withdrawn, reinstated = _funds(obj, currency)
    evidence = obj.child("evidence_details")
    return Dispute(
        id=obj.req_str("id"),
        charge_id=obj.ref("charge"),
        payment_intent_id=intent_id,
        amount=obj.req_int("amount"),
        currency=currency,
        reason=obj.opt_str("reason"),
        status=obj.req_str("status"),
        created_at=obj.opt_time("created"),
        evidence_due_by=evidence.opt_time("due_by") if evidence is not None else None,
        amount_withdrawn=withdrawn,
        amount_reinstated=reinstated,
    )


def dispute_customer(obj: Reader) -> str | None:
    """Disputes carry no customer; an expanded charge does."""
    charge = obj.expanded("charge")
    return charge.ref("customer") if charge is not None else None
