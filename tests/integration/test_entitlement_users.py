"""A change of the customer's user, on real PostgreSQL through the runtime's per-event
path: the current entitlements move, ``entitlement.revoked`` naming the previous user,
then ``entitlement.granted`` naming the new one."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

import contracts
from tests.entitlement_support import (
    apply,
    at,
    changes_of,
    customer_event,
    entitlement_rows,
    item,
    payment_event,
    subscription,
    subscription_event,
)
from tests.integration.test_entitlement_handler import handler_at, new_customer, paid_checkout
from workers.entitlement.handler import EntitlementHandler

pytestmark = pytest.mark.integration

T0 = at("2025-06-01T12:00:00")

Moves = list[tuple[str, str | None, str, bool, int | None]]


async def subscribed(conn: asyncpg.Connection, handler: EntitlementHandler, customer: str) -> None:
    sub = subscription([item("price_team")])  # sso, api_calls 5000, audit_log
    event = subscription_event(
        "subscription.activated", sub, customer_id=customer, occurred_at=T0 + timedelta(seconds=1)
    )
    await apply(conn, handler.handle, event)


def user_at(customer: str, user: str | None, seconds: int) -> contracts.CustomerEvent:
    return customer_event(customer, user, occurred_at=T0 + timedelta(seconds=seconds))


async def moves(
    conn: asyncpg.Connection, handler: EntitlementHandler, event: contracts.BillingEvent
) -> Moves:
    """(type, user, feature, entitled, limit) of each change, in emitted order."""
    out = await apply(conn, handler.handle, event)
    assert out is not None
    changes = changes_of(out)
    assert {c.caused_by for c in changes} <= {event.source.stripe_event_id}
    assert len({c.id for c in changes}) == len(changes)  # each change has its own id
    return [(c.type, c.user_id, c.feature, c.entitled, c.limit) for c in changes]


async def test_new_user_gets_the_entitlements_the_old_one_loses(conn: asyncpg.Connection) -> None:
    customer, handler = new_customer(), handler_at(T0)
    await apply(conn, handler.handle, user_at(customer, "user_old", 0))
    await subscribed(conn, handler, customer)
    rows = await entitlement_rows(conn, customer)

    change = user_at(customer, "user_new", 2)
    assert await moves(conn, handler, change) == [
        ("entitlement.revoked", "user_old", "api_calls", False, None),
        ("entitlement.revoked", "user_old", "audit_log", False, None),
        ("entitlement.revoked", "user_old", "sso", False, None),
        ("entitlement.granted", "user_new", "api_calls", True, 5000),
        ("entitlement.granted", "user_new", "audit_log", True, None),
        ("entitlement.granted", "user_new", "sso", True, None),
    ]
    assert await entitlement_rows(conn, customer) == rows  # the entitlements are the customer's
    assert await apply(conn, handler.handle, change) is None  # redelivery: a duplicate
    # An older customer event, or one naming the same user, moves nothing.
    assert await moves(conn, handler, user_at(customer, "user_stale", 1)) == []
    assert await moves(conn, handler, user_at(customer, "user_new", 3)) == []


async def test_access_that_ended_is_revoked_not_moved(conn: asyncpg.Connection) -> None:
    """A 30-day pass that ended, not swept yet, is revoked for the previous user and never
    granted to the new one."""
    customer = new_customer()
    await apply(conn, handler_at(T0).handle, user_at(customer, "user_a", 0))
    pass_purchase = payment_event(
        "payment.succeeded",
        customer,
        f"pi_pass_{customer}",
        occurred_at=T0 + timedelta(seconds=1),
        metadata={"product_id": "prod_pass"},
    )
    await apply(conn, handler_at(T0).handle, pass_purchase)
    assert await entitlement_rows(conn, customer)
    later = handler_at(T0 + timedelta(days=31))

    changes = await moves(conn, later, user_at(customer, "user_b", 2))

    assert changes
    assert all(c[:2] == ("entitlement.revoked", "user_a") for c in changes), changes
    assert await entitlement_rows(conn, customer) == {}


async def test_checkout_user_then_metadata_user(conn: asyncpg.Connection) -> None:
    customer, handler = new_customer(), handler_at(T0)
    await subscribed(conn, handler, customer)  # no user known yet
    checkout = paid_checkout(customer, client_reference_id="user_ref", mode="subscription")
    assert await moves(conn, handler, checkout) == [
        ("entitlement.granted", "user_ref", "api_calls", True, 5000),
        ("entitlement.granted", "user_ref", "audit_log", True, None),
        ("entitlement.granted", "user_ref", "sso", True, None),
    ]
    metadata = user_at(customer, "user_meta", 10)
    assert [(kind, user) for kind, user, *_ in await moves(conn, handler, metadata)] == [
        ("entitlement.revoked", "user_ref"),
    ] * 3 + [("entitlement.granted", "user_meta")] * 3
    # Metadata wins over a newer checkout: the user does not change.
    newer = paid_checkout(customer, client_reference_id="user_other", mode="subscription")
    newer = newer.model_copy(update={"occurred_at": T0 + timedelta(seconds=20)})
    assert await moves(conn, handler, newer) == []


async def test_user_removed_leaves_the_customer_its_entitlements(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    await apply(conn, handler.handle, user_at(customer, "user_gone", 0))
    await subscribed(conn, handler, customer)
    result = await moves(conn, handler, user_at(customer, None, 2))
    # Keyed by user: user_gone lost them. Keyed by customer: still granted at the end.
    assert [(kind, user) for kind, user, *_ in result] == [
        ("entitlement.revoked", "user_gone"),
    ] * 3 + [("entitlement.granted", None)] * 3


async def test_checkout_moves_then_grants_its_purchase(conn: asyncpg.Connection) -> None:
    customer, handler = new_customer(), handler_at(T0)
    await apply(conn, handler.handle, user_at(customer, None, 0))
    await subscribed(conn, handler, customer)
    checkout = paid_checkout(
        customer,
        client_reference_id="user_buyer",
        metadata={"lookup_key": "lifetime_deal"},
        payment_intent_id=f"pi_{uuid.uuid4().hex[:12]}",
    )
    result = await moves(conn, handler, checkout)
    assert [(kind, user, feature) for kind, user, feature, *_ in result] == [
        ("entitlement.granted", "user_buyer", "api_calls"),
        ("entitlement.granted", "user_buyer", "audit_log"),
        ("entitlement.granted", "user_buyer", "sso"),
        ("entitlement.granted", "user_buyer", "export"),
        ("entitlement.granted", "user_buyer", "projects"),
    ]


async def test_no_entitlements_nothing_to_move(conn: asyncpg.Connection) -> None:
    customer, handler = new_customer(), handler_at(T0)
    await apply(conn, handler.handle, user_at(customer, "user_a", 0))
    assert await moves(conn, handler, user_at(customer, "user_b", 1)) == []
    user = await conn.fetchval(
        "SELECT user_id FROM entitlement_customers WHERE customer_id = $1", customer
    )
    assert user == "user_b"
