"""Refunds of one-off purchases, on real PostgreSQL through the runtime's per-event path
and real ``charge.refunded`` fixtures: a full refund revokes the purchase's grant, a
partial one keeps it, and an older purchase event delivered after the refund never
grants again."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

from api_gateway.normalize import normalize
from contracts import BillingEvent, PaymentEvent
from tests.entitlement_support import (
    apply,
    at,
    changes_of,
    customer_event,
    entitlement_rows,
    payment_event,
)
from tests.integration.test_entitlement_handler import handler_at, new_customer, paid_checkout
from tests.stripe_fixtures import load_event

pytestmark = pytest.mark.integration

T0 = at("2025-06-01T12:00:00")
DEAL = {"lookup_key": "lifetime_deal"}


def charge_refunded(customer: str, intent: str, *, refunded: int, seconds: int) -> PaymentEvent:
    """The real ``charge.refunded`` fixture (100 refunded of 100), for ``intent``."""
    raw = load_event("charge.refunded__rubymock__1")
    raw["created"] = int((T0 + timedelta(seconds=seconds)).timestamp())
    raw["data"]["object"].update(customer=customer, payment_intent=intent, amount_refunded=refunded)
    event = normalize(raw)
    assert isinstance(event, PaymentEvent) and event.type == "payment.refunded"
    return event


def purchase(customer: str, intent: str, *, seconds: int = 0) -> PaymentEvent:
    occurred_at = T0 + timedelta(seconds=seconds)
    return payment_event(
        "payment.succeeded", customer, intent, occurred_at=occurred_at, metadata=DEAL
    )


async def test_full_refund_of_a_checkout_purchase_revokes_its_grant(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    await apply(conn, handler.handle, customer_event(customer, "user_r", occurred_at=T0))
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    checkout = paid_checkout(customer, metadata=DEAL, payment_intent_id=intent)
    await apply(conn, handler.handle, checkout)
    assert set(await entitlement_rows(conn, customer)) == {"export", "projects"}

    refund = charge_refunded(customer, intent, refunded=100, seconds=10)
    out = changes_of(await apply(conn, handler.handle, refund) or [])
    assert sorted((c.type, c.feature, c.entitled) for c in out) == [
        ("entitlement.revoked", "export", False),
        ("entitlement.revoked", "projects", False),
    ]
    assert {(c.user_id, c.caused_by) for c in out} == {("user_r", refund.source.stripe_event_id)}
    assert await entitlement_rows(conn, customer) == {}
    status = await conn.fetchval(
        "SELECT status FROM entitlement_sources WHERE customer_id = $1 AND source_id = $2",
        customer,
        intent,
    )
    assert status == "refunded"
    assert await apply(conn, handler.handle, refund) is None  # redelivery: a duplicate


async def test_partial_refund_keeps_the_grant_until_refunded_in_full(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    await apply(conn, handler.handle, purchase(customer, intent))
    before = await entitlement_rows(conn, customer)

    partial = charge_refunded(customer, intent, refunded=40, seconds=10)
    assert await apply(conn, handler.handle, partial) == []
    assert await entitlement_rows(conn, customer) == before
    # A second refund brings the refunded amount to the whole charge.
    rest = charge_refunded(customer, intent, refunded=100, seconds=20)
    out = changes_of(await apply(conn, handler.handle, rest) or [])
    assert {(c.type, c.feature) for c in out} == {
        ("entitlement.revoked", "export"),
        ("entitlement.revoked", "projects"),
    }


@pytest.mark.parametrize("seconds", [0, 30], ids=["same_second", "later"])
async def test_purchase_delivered_after_its_refund_grants_nothing(
    conn: asyncpg.Connection, seconds: int
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    refund = charge_refunded(customer, intent, refunded=100, seconds=seconds)
    assert await apply(conn, handler.handle, refund) == []
    assert await apply(conn, handler.handle, purchase(customer, intent)) == []
    checkout = paid_checkout(customer, metadata=DEAL, payment_intent_id=intent)
    checkout = checkout.model_copy(update={"occurred_at": T0})
    assert await apply(conn, handler.handle, checkout) == []
    assert await entitlement_rows(conn, customer) == {}


@pytest.mark.parametrize("refund_first", [False, True], ids=["purchase_first", "refund_first"])
async def test_full_refund_is_final_over_later_stamped_purchase_events(
    conn: asyncpg.Connection, refund_first: bool
) -> None:
    """A checkout of the same purchase stamped after the refund (Stripe creates them
    independently) grants nothing, in either delivery order."""
    customer, handler = new_customer(), handler_at(T0 + timedelta(minutes=1))
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    checkout = paid_checkout(customer, metadata=DEAL, payment_intent_id=intent)
    late_checkout = checkout.model_copy(update={"occurred_at": T0 + timedelta(seconds=20)})
    refund = charge_refunded(customer, intent, refunded=100, seconds=10)
    history: list[BillingEvent] = [purchase(customer, intent), late_checkout, refund]
    if refund_first:
        history = [refund, late_checkout, purchase(customer, intent)]
    for event in history:
        await apply(conn, handler.handle, event)
    assert await entitlement_rows(conn, customer) == {}


async def test_refund_of_one_purchase_keeps_what_other_sources_grant(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    first, second = (f"pi_{uuid.uuid4().hex[:12]}" for _ in range(2))
    await apply(conn, handler.handle, purchase(customer, first))
    await apply(conn, handler.handle, purchase(customer, second, seconds=1))
    refund = charge_refunded(customer, first, refunded=100, seconds=2)
    out = changes_of(await apply(conn, handler.handle, refund) or [])
    assert sorted((c.type, c.feature, tuple(c.sources)) for c in out) == [
        ("entitlement.updated", "export", (second,)),
        ("entitlement.updated", "projects", (second,)),
    ]


async def test_refunds_of_invoices_and_of_unknown_customers_are_ignored(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    invoice = normalize(load_event("charge.refunded__syncengine__1"))  # pays an invoice
    assert isinstance(invoice, PaymentEvent) and invoice.payment.invoice_id is not None
    invoice = invoice.model_copy(update={"customer_id": customer})
    assert await apply(conn, handler.handle, invoice) == []
    guest = charge_refunded(customer, "pi_guest", refunded=100, seconds=0)
    assert await apply(conn, handler.handle, guest.model_copy(update={"customer_id": None})) == []
    count = await conn.fetchval(
        "SELECT count(*) FROM entitlement_sources WHERE customer_id = $1", customer
    )
    assert count == 0
