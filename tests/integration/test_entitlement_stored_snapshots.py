"""Subscription snapshots stored before the contract refused what they hold (a negative
quantity, no items) do not make the customer's later events fail: the row stays as
stored until the subscription's next event replaces it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg
import pytest

from contracts.events import SubscriptionEventType
from tests.entitlement_support import (
    apply,
    at,
    entitlement_rows,
    item,
    make_catalog,
    subscription,
    subscription_event,
)
from workers.entitlement.handler import EntitlementHandler

pytestmark = pytest.mark.integration

T0 = at("2025-06-01T12:00:00")
PRO = item(lookup_key="pro_monthly", quantity=2)


def handler() -> EntitlementHandler:
    return EntitlementHandler(make_catalog(), past_due_grace=timedelta(days=3), clock=lambda: T0)


async def stored_before_the_contract(conn: asyncpg.Connection, *, legacy: bool) -> str:
    """A customer whose subscription (active at T0, past_due two days later) is stored
    with a snapshot the contract now refuses."""
    customer = f"cus_test_{uuid.uuid4().hex[:16]}"
    steps: list[tuple[str, SubscriptionEventType, int]] = [
        ("active", "subscription.activated", 0),
        ("past_due", "subscription.updated", 2),
    ]
    for status, event_type, days in steps:
        sub = subscription([PRO], id=f"sub_{customer}", status=status)
        event = subscription_event(
            event_type, sub, customer_id=customer, occurred_at=T0 + timedelta(days)
        )
        await apply(conn, handler().handle, event)
    await conn.execute(
        """
        UPDATE entitlement_sources
        SET snapshot = jsonb_set(snapshot, '{items,0,quantity}', '-50'),
            bases = CASE WHEN $2 THEN NULL ELSE bases END,
            addons = CASE WHEN $2 THEN NULL ELSE addons END
        WHERE customer_id = $1
        """,
        customer,
        legacy,
    )
    return customer


async def test_a_legacy_row_with_an_invalid_snapshot_is_kept(conn: asyncpg.Connection) -> None:
    customer = await stored_before_the_contract(conn, legacy=True)
    other = subscription([item("price_team")], id=f"sub_other_{customer}")
    event = subscription_event(
        "subscription.activated", other, customer_id=customer, occurred_at=T0 + timedelta(1)
    )
    await apply(conn, handler().handle, event)
    assert (await entitlement_rows(conn, customer))["audit_log"][0] is None


async def test_an_older_past_due_event_against_an_invalid_snapshot_changes_nothing(
    conn: asyncpg.Connection,
) -> None:
    """It would move the past_due streak's start (grants are derived again from the
    stored snapshot): with that snapshot invalid, it is ignored."""
    customer = await stored_before_the_contract(conn, legacy=False)
    before = await entitlement_rows(conn, customer)
    older = subscription([PRO], id=f"sub_{customer}", status="past_due")
    event = subscription_event(
        "subscription.updated", older, customer_id=customer, occurred_at=T0 + timedelta(1)
    )
    assert await apply(conn, handler().handle, event) == []
    assert await entitlement_rows(conn, customer) == before
