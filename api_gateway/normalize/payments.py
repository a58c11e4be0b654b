"""``charge.*`` and ``payment_intent.*`` → ``Payment``.

Stripe reports one card payment twice (``payment_intent.succeeded`` and
``charge.succeeded``). Both map to the same ``Payment.id`` (the intent id when known) so
the ledger upserts one row; legacy charges without an intent use the charge id. An intent's
card details, captured amount and refunds are its latest charge's, when the event
carries that charge (``charges.data`` until 2022-11-15, or an expanded ``latest_charge``).

``created_at`` is the payment's creation: the intent's ``created``, and a charge's own only
when it has no intent (a charge of an intent is created later, once per attempt, so its
``created`` would give one payment several). The charge's ``created`` travels as
``charge_created_at`` whenever the event carries the charge.
"""

from __future__ import annotations

from api_gateway.normalize.cards import UNKNOWN_METHOD, payment_method
from api_gateway.normalize.fields import Reader
from api_gateway.normalize.refunds import refunds_of
from contracts import Payment


def _amount_captured(charge: Reader) -> int | None:
    captured = charge.opt_int("amount_captured")
    if captured is not None:
        return captured
    # Older renderings only say whether it was captured; how much is unknown (a capture
    # may be partial), except that an uncaptured charge captured nothing.
    return 0 if charge.opt_bool("captured") is False else None


def from_charge(charge: Reader) -> Payment:
    charge_id = charge.req_str("id")
    intent_id = charge.loose_ref("payment_intent")
    amount = charge.req_int("amount")
    # Very old charges have no amount_refunded; a refunded one was refunded in full.
    refunded_default = amount if charge.flag("refunded") else 0
    status = charge.opt_str("status") or ("succeeded" if charge.flag("paid") else "failed")
    method = payment_method(charge)
    created = charge.opt_time("created")
    return Payment(
        id=intent_id or charge_id,
        payment_intent_id=intent_id,
        charge_id=charge_id,
        invoice_id=charge.loose_ref("invoice"),
        amount=amount,
        amount_refunded=charge.int_or("amount_refunded", refunded_default),
        currency=charge.req_str("currency"),
        status=status,
        failure_code=charge.opt_str("failure_code"),
        failure_message=charge.opt_str("failure_message"),
        receipt_url=charge.opt_str("receipt_url"),
        description=charge.opt_str("description"),
        metadata=charge.metadata(),
        amount_captured=_amount_captured(charge),
        payment_method_type=method.type,
        card_brand=method.card_brand,
        card_last4=method.card_last4,
        created_at=None if intent_id else created,
        refunds=refunds_of(charge),
        charge_created_at=created,
    )


def _latest_charge(intent: Reader) -> tuple[str | None, Reader | None]:
    """The intent's latest charge: ``latest_charge`` (2022-08-01+) or ``charges.data[0]``."""
    if intent.has("latest_charge"):
        return intent.loose_ref("latest_charge"), intent.expanded("latest_charge")
    charges = intent.list_of("charges")
    if charges:
        return charges[0].opt_str("id"), charges[0]
    error = intent.child("last_payment_error")
    return (error.loose_ref("charge") if error is not None else None), None


def from_payment_intent(intent: Reader) -> Payment:
    intent_id = intent.req_str("id")
    charge_id, charge = _latest_charge(intent)
    error = intent.child("last_payment_error")
    method = payment_method(charge) if charge is not None else UNKNOWN_METHOD
    return Payment(
        id=intent_id,
        payment_intent_id=intent_id,
        charge_id=charge_id,
        invoice_id=intent.loose_ref("invoice"),
        amount=intent.req_int("amount"),
        amount_refunded=charge.int_or("amount_refunded", 0) if charge is not None else 0,
        currency=intent.req_str("currency"),
        status=intent.req_str("status"),
        failure_code=error.opt_str("code") if error is not None else None,
        failure_message=error.opt_str("message") if error is not None else None,
        receipt_url=charge.opt_str("receipt_url") if charge is not None else None,
        description=intent.opt_str("description"),
        metadata=intent.metadata(),
        amount_captured=_amount_captured(charge) if charge is not None else None,
        payment_method_type=method.type,
        card_brand=method.card_brand,
        card_last4=method.card_last4,
        created_at=intent.opt_time("created"),
        refunds=refunds_of(charge) if charge is not None else [],
        charge_created_at=charge.opt_time("created") if charge is not None else None,
    )
