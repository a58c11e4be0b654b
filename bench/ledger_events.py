"""Realistic payment and invoice events for the invoice worker's benchmarks.

Every event is a real Stripe fixture (Stripe's own mock payloads, ``*__rubymock__1``: one
paid invoice, its payment intent and its charge, which name each other) with fresh ids:
the event's, the customer's and the invoice's, payment intent's, charge's and refund's,
so each payment is a new chain of the same shape. A payment is ``charge.succeeded``, then
``payment_intent.succeeded`` a second later, then ``invoice.paid`` (the invoice names the
intent and the charge: the ledger links them); every ``REFUND_EVERY``-th payment is
partly refunded afterwards (``charge.refunded`` listing the refund). A customer's
``customer.created`` can name an application user (``metadata.user_id``), for the read
API's ``/v1/invoices``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from bench.events import BASE_TIME, FIXTURES, STEP_SECONDS, run_token

CHARGE_FIXTURE: Final = FIXTURES / "charge.succeeded__rubymock__1.json"
INTENT_FIXTURE: Final = FIXTURES / "payment_intent.succeeded__rubymock__1.json"
INVOICE_FIXTURE: Final = FIXTURES / "invoice.paid__rubymock__1.json"
REFUND_FIXTURE: Final = FIXTURES / "charge.refunded__rubymock__1.json"
CUSTOMER_FIXTURE: Final = FIXTURES / "customer.created__rubymock__1.json"

# The fixtures' own ids, replaced by fresh ones in the text of each event.
_INVOICE_ID: Final = "in_000000000000000000000000"
_INTENT_ID: Final = "pi_000000000000000000000000"
_CHARGE_ID: Final = "ch_000000000000000000000000"
_REFUND_ID: Final = "re_000000000000000000000000"
_CUSTOMER_ID: Final = "cus_00000000000000"

AMOUNT: Final = 2000  # the fixtures' (minor units, usd)
REFUNDED: Final = 500  # a partial refund
REFUND_EVERY: Final = 10
"""One payment in this many is partly refunded (``charge.refunded``)."""
EVENTS_PER_PAYMENT: Final = 3  # without its refund

_TEMPLATES: dict[str, str] = {}


def _template(path: Path) -> str:
    key = str(path)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = path.read_text()
    return _TEMPLATES[key]


def _event(
    fixture: Path, event_id: str, created: int, customer_id: str, ids: dict[str, str]
) -> dict[str, Any]:
    text = _template(fixture)
    for old, new in ids.items():
        text = text.replace(old, new)
    event: dict[str, Any] = json.loads(text)  # a fresh copy, 10x deepcopy's speed
    event["id"] = event_id
    event["created"] = created
    event["data"]["object"]["customer"] = customer_id
    return event


class PaymentIds:
    """The Stripe ids of one payment's chain: invoice, payment intent, charge, refund."""

    def __init__(self, run: str, n: int) -> None:
        self.invoice = f"in_bench{run}{n:09d}"
        self.intent = f"pi_bench{run}{n:09d}"
        self.charge = f"ch_bench{run}{n:09d}"
        self.refund = f"re_bench{run}{n:09d}"
        self.number = f"BENCH{run.upper()}-{n:06d}"

    def replacements(self) -> dict[str, str]:
        return {
            _INVOICE_ID: self.invoice,
            _INTENT_ID: self.intent,
            _CHARGE_ID: self.charge,
            _REFUND_ID: self.refund,
        }


def charge_succeeded(
    event_id: str, customer_id: str, ids: PaymentIds, created: int
) -> dict[str, Any]:
    event = _event(CHARGE_FIXTURE, event_id, created, customer_id, ids.replacements())
    event["data"]["object"]["created"] = created
    return event


def intent_succeeded(
    event_id: str, customer_id: str, ids: PaymentIds, created: int, charged: int
) -> dict[str, Any]:
    """The payment intent's event, ``created`` when its charge was (``charged``)."""
    event = _event(INTENT_FIXTURE, event_id, created, customer_id, ids.replacements())
    event["data"]["object"]["created"] = charged
    return event


def invoice_paid(event_id: str, customer_id: str, ids: PaymentIds, created: int) -> dict[str, Any]:
    """``invoice.paid`` for the payment's invoice (it names the intent and the charge)."""
    event = _event(INVOICE_FIXTURE, event_id, created, customer_id, ids.replacements())
    invoice = event["data"]["object"]
    invoice["number"] = ids.number
    invoice["created"] = created - 5
    invoice["status_transitions"]["finalized_at"] = created - 4
    invoice["status_transitions"]["paid_at"] = created - 1
    return event


def charge_refunded(
    event_id: str, customer_id: str, ids: PaymentIds, created: int, charged: int
) -> dict[str, Any]:
    """A partial refund of the payment's charge (the fixture's charge names no intent:
    here it names the payment's, as a card payment's charge does)."""
    event = _event(REFUND_FIXTURE, event_id, created, customer_id, ids.replacements())
    charge = event["data"]["object"]
    charge.update(
        created=charged,
        payment_intent=ids.intent,
        amount=AMOUNT,
        amount_captured=AMOUNT,
        amount_refunded=REFUNDED,
        refunded=False,  # partly
    )
    [refund] = charge["refunds"]["data"]
    refund.update(amount=REFUNDED, created=created, payment_intent=ids.intent)
    return event


def customer_created(event_id: str, customer_id: str, user_id: str, created: int) -> dict[str, Any]:
    """``customer.created`` naming the application user (``metadata.user_id``)."""
    event = _event(CUSTOMER_FIXTURE, event_id, created, customer_id, {_CUSTOMER_ID: customer_id})
    customer = event["data"]["object"]
    customer["id"] = customer_id
    customer.pop("customer", None)  # a customer object names no customer of its own
    customer["metadata"] = {"user_id": user_id}
    return event


MAIL_DOMAIN: Final = "bench.example.com"


def customer_email(customer_id: str) -> str:
    """The e-mail address of a benchmark customer: a mail to it names its customer."""
    return f"{customer_id}@{MAIL_DOMAIN}"


def customer_of(address: str) -> str:
    """The customer a benchmark address (``customer_email``) names."""
    return address.partition("@")[0]


def payment_events(count: int, customers: int) -> Iterator[dict[str, Any]]:
    """``count`` Stripe events: payments round robin over ``customers`` customers (payment
    ``p`` is customer ``p % customers``'s ``p // customers``-th, a minute after its
    previous one), each payment's events in a row; the last payment may be cut short."""
    run = run_token()
    sent = 0
    payment = 0
    while sent < count:
        customer, step = payment % customers, payment // customers
        customer_id = f"cus_bench{run}{customer:07d}"
        ids = PaymentIds(run, payment)
        charged = BASE_TIME + step * STEP_SECONDS
        chain = [
            charge_succeeded(f"evt_bench{run}{payment:09d}c", customer_id, ids, charged),
            intent_succeeded(
                f"evt_bench{run}{payment:09d}p", customer_id, ids, charged + 1, charged
            ),
            invoice_paid(f"evt_bench{run}{payment:09d}i", customer_id, ids, charged + 2),
        ]
        if payment % REFUND_EVERY == REFUND_EVERY - 1:
            chain.append(
                charge_refunded(
                    f"evt_bench{run}{payment:09d}r", customer_id, ids, charged + 30, charged
                )
            )
        chain = chain[: count - sent]
        yield from chain
        sent += len(chain)
        payment += 1
