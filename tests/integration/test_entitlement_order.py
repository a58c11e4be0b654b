"""Order tolerance, as a property: any interleaving, with duplicates and replays, of one
customer's realistic history ends in the same entitlements and the same per-source
state as applying the history once, in order (DESIGN.md, guarantees 3 and 4). The history
holds add-ons in another subscription and bought one-off, and full and partial refunds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts
from contracts import CheckoutEvent, EntitlementSummaryEvent
from tests.entitlement_support import (
    apply,
    at,
    customer_event,
    item,
    make_catalog,
    payment_event,
    source,
    subscription,
    subscription_event,
)
from workers.entitlement.handler import EntitlementHandler

pytestmark = pytest.mark.integration

NOW = at("2025-06-10T12:00:00")
T0 = NOW - timedelta(days=1)
PERIOD_END = NOW + timedelta(days=30)
SUB = "sub_history"
ADDON_SUB = "sub_history_addon"


def history(customer: str, run: str) -> list[contracts.BillingEvent]:
    """One customer's life, in Stripe's order. Event ids are ``evt_<run>_<nn>``: the same
    length in every run, so same-second ties break the same way in each."""
    events: list[contracts.BillingEvent] = []

    def eid() -> str:
        return f"evt_{run}_{len(events):02}"

    def sub(seconds: int, event_type: Any = "subscription.updated", **kwargs: Any) -> None:
        kwargs.setdefault("items", [item(lookup_key="pro_monthly", product_id="prod_pro")])
        kwargs.setdefault("period_end", PERIOD_END)
        kwargs.setdefault("id", SUB)
        snapshot = subscription(**kwargs)
        events.append(
            subscription_event(
                event_type,
                snapshot,
                customer_id=customer,
                occurred_at=T0 + timedelta(seconds=seconds),
                event_id=eid(),
            )
        )

    def pay(seconds: int, event_type: Any, intent: str, **kwargs: Any) -> None:
        at = T0 + timedelta(seconds=seconds)
        events.append(
            payment_event(event_type, customer, intent, occurred_at=at, event_id=eid(), **kwargs)
        )

    pro = item(lookup_key="pro_monthly", product_id="prod_pro", quantity=3)
    addon = item(lookup_key="addon_calls", quantity=2)
    trial_end = NOW + timedelta(days=10)

    events.append(
        customer_event(
            customer, "user_1", occurred_at=T0, event_id=eid(), event_type="customer.created"
        )
    )
    sub(0, "subscription.activated", status="trialing", trial_end=trial_end)  # same second
    events.append(checkout(customer, T0 + timedelta(seconds=5), eid()))
    sub(10, status="active")
    sub(10, items=[pro])  # quantity change in the same second: the higher id wins
    # An add-on in its own subscription: it extends the pro of the other one.
    sub(12, "subscription.activated", id=ADDON_SUB, items=[item(lookup_key="addon_calls")])
    events.append(summary(customer, T0 + timedelta(seconds=15), eid(), ["beta", "journeys"]))
    sub(20, items=[pro, addon])  # add-on in the same subscription
    pay(22, "payment.succeeded", "pi_pack", metadata={"lookup_key": "projects_pack"})  # one-off
    events.append(
        customer_event(customer, "user_2", occurred_at=T0 + timedelta(seconds=25), event_id=eid())
    )
    pay(27, "payment.refunded", "pi_history", refunded=400)  # partial: the deal stays
    sub(30, status="past_due", items=[pro, addon])
    pay(33, "payment.succeeded", "pi_pass", metadata={"product_id": "prod_pass"})
    pay(33, "payment.refunded", "pi_pass", refunded=1000)  # same second: the refund wins
    sub(40, status="past_due", items=[pro, addon])  # still past_due: grace runs from 30
    events.append(summary(customer, T0 + timedelta(seconds=45), eid(), ["journeys"]))
    sub(50, status="active", items=[item("price_team")])  # paid again, plan change
    sub(55, id=ADDON_SUB, items=[item(lookup_key="addon_calls", quantity=2)])  # no pro now
    sub(60, status="active", items=[item("price_team")], cancel_at_period_end=True)
    sub(60, "subscription.canceled", status="canceled", items=[item("price_team")])
    return events


def checkout(customer: str, occurred_at: datetime, event_id: str) -> CheckoutEvent:
    return CheckoutEvent(
        id=contracts.event_id_for(event_id),
        type="checkout.completed",
        occurred_at=occurred_at,
        source=source(event_id),
        customer_id=customer,
        checkout=contracts.Checkout(
            id="cs_history",
            mode="payment",
            status="complete",
            payment_status="paid",
            client_reference_id="user_from_checkout",
            subscription_id=None,
            payment_intent_id="pi_history",
            invoice_id=None,
            amount_total=1000,
            currency="usd",
            customer_email=None,
            metadata={"lookup_key": "lifetime_deal"},
        ),
    )


def summary(
    customer: str, occurred_at: datetime, event_id: str, keys: list[str]
) -> EntitlementSummaryEvent:
    return EntitlementSummaryEvent(
        id=contracts.event_id_for(event_id),
        type="entitlement_summary.updated",
        occurred_at=occurred_at,
        source=source(event_id),
        customer_id=customer,
        summary=contracts.EntitlementSummary(
            entitlements=[
                contracts.ActiveEntitlement(id=f"ent_{k}", feature_id=f"feat_{k}", lookup_key=k)
                for k in keys
            ]
        ),
    )


async def final_state(conn: asyncpg.Connection, customer: str, run: str) -> dict[str, Any]:
    """Everything the worker stores for ``customer``, with run-specific ids made neutral."""

    def neutral(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(run, "RUN").replace(customer, "CUSTOMER")
        if isinstance(value, list):
            return [neutral(v) for v in value]
        return value

    entitlements = await conn.fetch(
        'SELECT feature, "limit", expires_at, sources FROM entitlements '
        "WHERE customer_id = $1 ORDER BY feature",
        customer,
    )
    sources = await conn.fetch(
        "SELECT source_id, kind, status, grants::text, snapshot::text, event_at, event_rank, "
        "event_id, past_due_since, past_due_track::text, bases::text, addons::text "
        "FROM entitlement_sources WHERE customer_id = $1 ORDER BY source_id",
        customer,
    )
    customers = await conn.fetch(
        "SELECT user_id, user_id_from, metadata_user_id, event_at, event_rank, event_id, "
        "checkout_user_id, checkout_event_at, checkout_event_id "
        "FROM entitlement_customers WHERE customer_id = $1",
        customer,
    )
    schedule = await conn.fetchval(
        "SELECT due_at FROM entitlement_schedule WHERE customer_id = $1", customer
    )
    return {
        "entitlements": [[neutral(v) for v in r.values()] for r in entitlements],
        "sources": [[neutral(v) for v in r.values()] for r in sources],
        "customers": [[neutral(v) for v in r.values()] for r in customers],
        "schedule": schedule,
    }


async def run_history(
    database_url: str, order: list[int], replays: set[int], cut: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    handler = EntitlementHandler(
        make_catalog(), past_due_grace=timedelta(days=3), clock=lambda: NOW
    )
    conn = await asyncpg.connect(database_url)
    try:
        states = []
        for sequence in ([*range(cut)], order):
            customer, run = f"cus_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex[:12]
            events = history(customer, run)[:cut]
            for n in sequence:
                await apply(conn, handler.handle, events[n])
                if n in replays:  # redelivered after its idempotency row is gone
                    async with conn.transaction():
                        assert await handler.handle(conn, events[n]) == []
            states.append(await final_state(conn, customer, run))
        return states[0], states[1]
    finally:
        await conn.close()


HISTORY_LENGTH = len(history("cus_x", "x" * 12))


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[int], set[int], int]:
    cut = draw(st.integers(min_value=1, max_value=HISTORY_LENGTH))
    order = draw(st.permutations(range(cut)))
    duplicates = draw(st.lists(st.integers(0, cut - 1), max_size=6))
    positions = draw(
        st.lists(st.integers(0, cut), min_size=len(duplicates), max_size=len(duplicates))
    )
    sequence = list(order)
    for event, position in zip(duplicates, positions, strict=True):
        sequence.insert(position, event)
    replays = draw(st.sets(st.integers(0, cut - 1), max_size=3))
    return sequence, replays, cut


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=interleavings())
def test_any_interleaving_converges_to_the_in_order_state(
    database_url: str, case: tuple[list[int], set[int], int]
) -> None:
    order, replays, cut = case
    in_order, shuffled = asyncio.run(run_history(database_url, order, replays, cut))
    assert shuffled == in_order


def test_full_history_ends_in_the_expected_state(database_url: str) -> None:
    """Anchor for the property: what the whole history, in order, leaves behind."""
    in_order, _ = asyncio.run(run_history(database_url, [], set(), HISTORY_LENGTH))
    features = {row[0]: row[1:] for row in in_order["entitlements"]}
    # The one-off add-on extends the deal; the add-on subscription has no pro left.
    assert features == {
        "export": [None, None, ["pi_history"]],
        "projects": [15, None, ["pi_history", "pi_pack"]],
        "journeys": [None, None, ["stripe:CUSTOMER"]],
    }
    assert in_order["customers"][0][:3] == ["user_2", "metadata", "user_2"]
    rows = {r[0]: r for r in in_order["sources"]}
    assert rows[SUB][2] == "canceled" and rows[SUB][3] == "{}" and rows[SUB][8] is None
    assert rows["pi_pass"][1:4] == ["payment", "refunded", "{}"]
    assert rows["pi_history"][2] == "paid"
    assert rows[ADDON_SUB][2] == "active" and rows[ADDON_SUB][3] == "{}"


def test_history_midway_counts_the_addons_of_every_source(database_url: str) -> None:
    """Before the refunds and the plan change (the first 9 events): the add-on
    subscription extends the other one's pro, the one-off add-on extends the deal."""
    in_order, _ = asyncio.run(run_history(database_url, [], set(), 9))
    features = {row[0]: row[1:] for row in in_order["entitlements"]}
    # pro, its add-on in the same subscription, the add-on subscription (not per seat)
    assert features["api_calls"] == [1000 + 250 + 250, None, [SUB, ADDON_SUB]]
    assert features["priority_support"] == [None, None, [SUB, ADDON_SUB]]
    assert features["projects"] == [10 + 5, None, ["pi_history", "pi_pack"]]
    assert features["storage_gb"] == [30, None, [SUB]]
