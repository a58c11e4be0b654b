"""``checkout.session.*`` → ``Checkout``."""

from __future__ import annotations

from api_gateway.normalize.fields import Reader
from contracts import Checkout


def checkout(session: Reader) -> Checkout:
    details = session.child("customer_details")
    # customer_email is only what the integration prefilled; customer_details.email is
    # what the buyer typed (2020-08-27+), the address receipts go to.
    email = session.opt_str("customer_email") or (
        details.opt_str("email") if details is not None else None
    )
    return Checkout(
        id=session.req_str("id"),
        # Sessions before mode existed (2019) could only be one-off payments.
        mode=session.opt_str("mode") or "payment",
        status=session.opt_str("status"),
        payment_status=session.opt_str("payment_status"),
        client_reference_id=session.opt_str("client_reference_id"),
        subscription_id=session.ref("subscription"),
        payment_intent_id=session.loose_ref("payment_intent"),
        invoice_id=session.loose_ref("invoice"),
        amount_total=session.opt_int("amount_total"),
        currency=session.opt_str("currency"),
        customer_email=email,
        metadata=session.metadata(),
    )
