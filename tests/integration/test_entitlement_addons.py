"""Add-ons outside their base's subscription, on real PostgreSQL through the runtime's
per-event path: an add-on in another subscription of the customer or bought one-off
extends a base the customer holds from any source, within the add-on's own window, stops
when the base goes and counts again when it comes back."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import contracts
from contracts import PaymentEvent
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
from tests.integration.test_entitlement_handler import handler_at, new_customer
from workers.entitlement.handler import EntitlementHandler
from workers.runtime.spec import Poison

pytestmark = pytest.mark.integration

T0 = at("2025-06-01T12:00:00")
PRO = item(lookup_key="pro_monthly")
ADDON = item(lookup_key="addon_calls")


def sub_event(customer: str, seconds: int, sub_id: str, **kwargs: Any) -> contracts.BillingEvent:
    event_type = kwargs.pop("event_type", "subscription.updated")
    sub = subscription(id=sub_id, **kwargs)
    occurred_at = T0 + timedelta(seconds=seconds)
    return subscription_event(event_type, sub, customer_id=customer, occurred_at=occurred_at)


def one_off(customer: str, seconds: int, lookup_key: str) -> PaymentEvent:
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    occurred_at = T0 + timedelta(seconds=seconds)
    metadata = {"lookup_key": lookup_key}
    return payment_event(
        "payment.succeeded", customer, intent, occurred_at=occurred_at, metadata=metadata
    )


async def changes(
    conn: asyncpg.Connection, handler: EntitlementHandler, event: contracts.BillingEvent
) -> list[tuple[str, str, int | None]]:
    out = await apply(conn, handler.handle, event)
    assert out is not None
    return sorted((c.type, c.feature, c.limit) for c in changes_of(out))


async def limits(conn: asyncpg.Connection, customer: str) -> dict[str, int | None]:
    return {
        feature: limit
        for feature, (limit, _, _) in (await entitlement_rows(conn, customer)).items()
    }


async def test_addon_subscription_follows_the_base_of_another_subscription(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0 + timedelta(minutes=1))
    await apply(conn, handler.handle, customer_event(customer, "user_9", occurred_at=T0))
    base = sub_event(customer, 1, "sub_base", items=[PRO], event_type="subscription.activated")
    await apply(conn, handler.handle, base)

    addon = sub_event(customer, 2, "sub_addon", items=[ADDON], event_type="subscription.activated")
    out = changes_of(await apply(conn, handler.handle, addon) or [])
    assert sorted((c.type, c.feature, c.limit, tuple(c.sources)) for c in out) == [
        ("entitlement.granted", "priority_support", None, ("sub_addon",)),
        ("entitlement.updated", "api_calls", 1250, ("sub_addon", "sub_base")),
    ]
    assert {c.user_id for c in out} == {"user_9"}

    # The base is paused: everything goes, the add-on's features too.
    paused = sub_event(customer, 3, "sub_base", items=[PRO], paused=True)
    assert await changes(conn, handler, paused) == [
        ("entitlement.revoked", "api_calls", None),
        ("entitlement.revoked", "priority_support", None),
        ("entitlement.revoked", "sso", None),
        ("entitlement.revoked", "storage_gb", None),
    ]
    assert await entitlement_rows(conn, customer) == {}
    # ... and comes back with the add-on.
    resumed = sub_event(customer, 4, "sub_base", items=[PRO], event_type="subscription.resumed")
    assert await changes(conn, handler, resumed) == [
        ("entitlement.granted", "api_calls", 1250),
        ("entitlement.granted", "priority_support", None),
        ("entitlement.granted", "sso", None),
        ("entitlement.granted", "storage_gb", 10),
    ]

    # Cancelled for good; a new subscription of the base brings the add-on back.
    canceled = sub_event(
        customer, 5, "sub_base", items=[PRO], status="canceled", event_type="subscription.canceled"
    )
    await apply(conn, handler.handle, canceled)
    assert await entitlement_rows(conn, customer) == {}
    again = sub_event(customer, 6, "sub_new", items=[PRO], event_type="subscription.activated")
    await apply(conn, handler.handle, again)
    rows = await entitlement_rows(conn, customer)
    assert rows["api_calls"] == (1250, None, ["sub_addon", "sub_new"])

    # The add-on ends: only the base's own limit remains.
    addon_gone = sub_event(
        customer,
        7,
        "sub_addon",
        items=[ADDON],
        status="canceled",
        event_type="subscription.canceled",
    )
    assert await changes(conn, handler, addon_gone) == [
        ("entitlement.revoked", "priority_support", None),
        ("entitlement.updated", "api_calls", 1000),
    ]


async def test_addon_before_its_base_waits_and_ends_with_the_base_trial(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    addon = sub_event(customer, 0, "sub_addon", items=[ADDON], event_type="subscription.activated")
    assert await changes(conn, handler, addon) == []
    assert await entitlement_rows(conn, customer) == {}

    trial_end = T0 + timedelta(days=7)
    trial = sub_event(
        customer,
        1,
        "sub_base",
        items=[PRO],
        status="trialing",
        trial_end=trial_end,
        event_type="subscription.activated",
    )
    await apply(conn, handler.handle, trial)
    rows = await entitlement_rows(conn, customer)
    assert rows["api_calls"] == (1250, trial_end, ["sub_addon", "sub_base"])
    assert rows["priority_support"] == (None, trial_end, ["sub_addon"])

    async with conn.transaction():
        expired = changes_of(await handler_at(trial_end).expire(conn))
    assert sorted((c.type, c.feature) for c in expired if c.customer_id == customer) == [
        ("entitlement.revoked", "api_calls"),
        ("entitlement.revoked", "priority_support"),
        ("entitlement.revoked", "sso"),
        ("entitlement.revoked", "storage_gb"),
    ]
    assert await entitlement_rows(conn, customer) == {}


async def test_one_off_addon_keeps_its_own_window(conn: asyncpg.Connection) -> None:
    customer, handler = new_customer(), handler_at(T0)
    base = sub_event(customer, 0, "sub_base", items=[PRO], event_type="subscription.activated")
    await apply(conn, handler.handle, base)
    calls_pass = one_off(customer, 1, "calls_pass")  # 10 days, add-on for pro
    assert await changes(conn, handler, calls_pass) == [("entitlement.updated", "api_calls", 1300)]
    assert (await entitlement_rows(conn, customer))["api_calls"][1] is None  # the base has none

    async with conn.transaction():
        later = handler_at(calls_pass.occurred_at + timedelta(days=10))
        expired = changes_of(await later.expire(conn))
    mine = [(c.type, c.feature, c.limit, c.caused_by) for c in expired if c.customer_id == customer]
    assert mine == [("entitlement.updated", "api_calls", 1000, None)]


async def test_one_off_addon_extends_whichever_base_is_held(conn: asyncpg.Connection) -> None:
    customer, handler = new_customer(), handler_at(T0)
    pack = one_off(customer, 0, "projects_pack")  # +5 projects to lifetime_deal or pro
    assert await changes(conn, handler, pack) == []
    deal = one_off(customer, 1, "lifetime_deal")
    await apply(conn, handler.handle, deal)
    assert (await limits(conn, customer))["projects"] == 15

    # The deal is refunded: the pack's base is gone.
    refund = payment_event(
        "payment.refunded",
        customer,
        deal.payment.id,
        occurred_at=T0 + timedelta(seconds=2),
        refunded=1000,
    )
    assert await changes(conn, handler, refund) == [
        ("entitlement.revoked", "export", None),
        ("entitlement.revoked", "projects", None),
    ]
    # pro is a base of the pack too (and grants no projects itself).
    base = sub_event(customer, 3, "sub_base", items=[PRO], event_type="subscription.activated")
    await apply(conn, handler.handle, base)
    assert await limits(conn, customer) == {
        "sso": None,
        "api_calls": 1000,
        "storage_gb": 10,
        "projects": 5,
    }


async def test_one_off_of_an_addon_not_sold_one_off_is_poison(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    event = one_off(customer, 0, "addon_calls")
    with pytest.raises(Poison, match="'addon_calls' is an add-on not sold one-off"):
        await apply(conn, handler_at(T0).handle, event)


async def test_rows_stored_before_bases_were_get_them_from_their_snapshot(
    conn: asyncpg.Connection,
) -> None:
    customer, handler = new_customer(), handler_at(T0)
    base = sub_event(customer, 0, "sub_base", items=[PRO], event_type="subscription.activated")
    await apply(conn, handler.handle, base)
    # As a row written before migration 0002 looks.
    await conn.execute(
        "UPDATE entitlement_sources SET bases = NULL, addons = NULL WHERE customer_id = $1",
        customer,
    )
    await apply(conn, handler.handle, one_off(customer, 1, "calls_pass"))
    assert (await limits(conn, customer))["api_calls"] == 1300
    stored = await conn.fetchval(
        "SELECT bases::text FROM entitlement_sources WHERE customer_id = $1 AND source_id = $2",
        customer,
        "sub_base",
    )
    assert stored == '{"pro": null}'
