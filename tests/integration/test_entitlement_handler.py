"""The entitlement handler on real PostgreSQL, over every relevant Stripe fixture and the
lifecycle cases (applied as the runtime applies them: idempotency row, then handler)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

import contracts
from api_gateway.normalize import HANDLED_TYPES, normalize
from contracts import ENTITLEMENT_CHANGES, CheckoutEvent, PaymentEvent
from tests.entitlement_support import (
    apply,
    at,
    changes_of,
    customer_event,
    entitlement_rows,
    item,
    make_catalog,
    model_with,
    subscription,
    subscription_event,
)
from tests.stripe_fixtures import FIXTURES, fixture_files
from workers.entitlement.handler import EntitlementHandler
from workers.runtime.spec import Poison

pytestmark = pytest.mark.integration

GRACE = timedelta(days=3)


def new_customer() -> str:
    return f"cus_test_{uuid.uuid4().hex[:16]}"


def handler_at(now: datetime) -> EntitlementHandler:
    return EntitlementHandler(make_catalog(), past_due_grace=GRACE, clock=lambda: now)


def fixture_event(path: Path, customer_id: str) -> contracts.BillingEvent:
    """The fixture, normalized, with a fresh event id and ``customer_id`` as its customer."""
    raw: dict[str, Any] = json.loads(path.read_text())
    raw["id"] = f"evt_test_{uuid.uuid4().hex}"
    obj = raw["data"]["object"]
    if obj.get("object") == "customer":
        obj["id"] = customer_id
    elif "customer" in obj:
        obj["customer"] = customer_id
    return normalize(raw)


def handled_fixtures() -> list[Path]:
    return [p for p in fixture_files() if json.loads(p.read_text())["type"] in HANDLED_TYPES]


T = datetime.fromisoformat
E = tuple[int | None, datetime | None]

# What each fixture grants when applied alone (clock at the event's time), per the test
# catalog; every other handled fixture (invoices, disputes, payments of invoices or naming
# no product, customers, a canceled subscription) changes no entitlement.
EXPECTED: dict[str, dict[str, E]] = {
    "customer.subscription.created__drfstripe__1": {"sso": (None, None), "api_calls": (1000, None)},
    "customer.subscription.created__nijikokun__1": {"reports": (None, None)},
    "customer.subscription.created__rubymock__1": {"seats": (1, None)},
    "customer.subscription.created__syncengine__1": {"sso": (None, None), "api_calls": (500, None)},
    "customer.subscription.trial_will_end__nijikokun__1": {
        "reports": (None, T("2015-10-05T23:42:41+00:00"))
    },
    # trialing but already ended (ended_at set): immediate cancellation, nothing.
    "customer.subscription.trial_will_end__rubymock__1": {},
    "customer.subscription.trial_will_end__rubymock__2": {
        "reports": (None, T("2015-01-27T04:01:35+00:00"))
    },
    "customer.subscription.updated__drfstripe__1": {
        "sso": (None, T("2023-01-14T08:56:57+00:00")),
        "api_calls": (1000, T("2023-01-14T08:56:57+00:00")),
    },
    "customer.subscription.updated__drfstripe__2": {"sso": (None, None), "api_calls": (1000, None)},
    "customer.subscription.updated__drfstripe__3": {"sso": (None, None), "api_calls": (1000, None)},
    "customer.subscription.updated__drfstripe__4": {"sso": (None, None), "api_calls": (1000, None)},
    "customer.subscription.updated__nijikokun__1": {"reports": (None, None)},
    "customer.subscription.updated__rubymock__1": {"seats": (1, None)},
    "customer.subscription.updated__syncengine__1": {"sso": (None, None), "api_calls": (500, None)},
    "entitlements.active_entitlement_summary.updated__syncengine__1": {"journeys": (None, None)},
}


@pytest.mark.parametrize("path", handled_fixtures(), ids=lambda p: p.stem)
async def test_every_fixture(conn: asyncpg.Connection, path: Path) -> None:
    customer = new_customer()
    event = fixture_event(path, customer)
    handler = handler_at(event.occurred_at)
    out = await apply(conn, handler.handle, event)
    assert out is not None
    rows = await entitlement_rows(conn, customer)
    expected = EXPECTED.get(path.stem, {})
    assert {feature: (limit, expires) for feature, (limit, expires, _) in rows.items()} == expected
    changes = changes_of(out)
    assert sorted(c.feature for c in changes) == sorted(expected)
    assert all(
        c.type == "entitlement.granted" and c.caused_by == event.source.stripe_event_id
        for c in changes
    )
    # A redelivery changes nothing.
    assert await apply(conn, handler.handle, event) is None
    assert await entitlement_rows(conn, customer) == rows


DRF_LIFECYCLE = [  # one real subscription's events, in the order Stripe created them
    "customer.subscription.created__drfstripe__1",  # active
    "customer.subscription.updated__drfstripe__3",  # price change
    "customer.subscription.updated__drfstripe__4",
    "customer.subscription.updated__drfstripe__1",  # cancel at period end
    "customer.subscription.updated__drfstripe__2",  # cancellation withdrawn
    "customer.subscription.deleted__drfstripe__1",  # deleted
]


@pytest.mark.parametrize("order", ["in_order", "reversed"])
async def test_real_lifecycle_in_any_order(conn: asyncpg.Connection, order: str) -> None:
    customer = new_customer()
    events = [fixture_event(FIXTURES / f"{name}.json", customer) for name in DRF_LIFECYCLE]
    handler = handler_at(at("2022-01-14T10:00:00"))
    states = []
    for event in events if order == "in_order" else events[::-1]:
        await apply(conn, handler.handle, event)
        states.append(await entitlement_rows(conn, customer))
    assert states[-1] == {}
    if order == "reversed":
        assert all(state == {} for state in states)  # the deletion came first and wins
    else:
        assert states[3]["sso"][1] == T("2023-01-14T08:56:57+00:00")  # cancel at period end
        assert states[4]["sso"][1] is None  # withdrawn


async def test_lifecycle_emits_granted_updated_revoked(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    now = at("2025-06-01T12:00:00")
    handler = handler_at(now)
    t0 = now - timedelta(hours=1)
    await apply(conn, handler.handle, customer_event(customer, "user_42", occurred_at=t0))

    def sub_event(seconds: int, **kwargs: Any) -> contracts.BillingEvent:
        event_type = kwargs.pop("event_type", "subscription.updated")
        sub = subscription(**{"items": [item(lookup_key="pro_monthly")], **kwargs})
        return subscription_event(
            event_type, sub, customer_id=customer, occurred_at=t0 + timedelta(seconds=seconds)
        )

    out = await apply(conn, handler.handle, sub_event(1, event_type="subscription.activated"))
    granted = changes_of(out or [])
    assert {(c.type, c.feature, c.limit) for c in granted} == {
        ("entitlement.granted", "sso", None),
        ("entitlement.granted", "api_calls", 1000),
        ("entitlement.granted", "storage_gb", 10),
    }
    assert all(c.user_id == "user_42" and c.entitled for c in granted)
    assert out is not None and out[0].topic == ENTITLEMENT_CHANGES and out[0].key == customer
    assert out[0].headers["ce_type"] == "entitlement.granted"
    assert out[0].headers["ce_id"] == str(granted[0].id)
    assert granted[0].id == contracts.change_id_for(
        granted[0].caused_by or "", customer, granted[0].feature
    )

    seats = sub_event(2, items=[item(lookup_key="pro_monthly", quantity=3)])
    updated = changes_of(await apply(conn, handler.handle, seats) or [])
    assert [(c.type, c.feature, c.limit) for c in updated] == [
        ("entitlement.updated", "storage_gb", 30)
    ]

    paused = changes_of(await apply(conn, handler.handle, sub_event(3, paused=True)) or [])
    assert {c.type for c in paused} == {"entitlement.revoked"} and len(paused) == 3
    assert await entitlement_rows(conn, customer) == {}
    resumed = changes_of(await apply(conn, handler.handle, sub_event(4)) or [])
    assert {c.type for c in resumed} == {"entitlement.granted"} and len(resumed) == 3

    past_due = sub_event(5, status="past_due")
    changes = changes_of(await apply(conn, handler.handle, past_due) or [])
    assert {c.expires_at for c in changes} == {past_due.occurred_at + GRACE}
    still = changes_of(await apply(conn, handler.handle, sub_event(6, status="past_due")) or [])
    assert still == []  # the grace period runs from when it first became past_due

    deleted = sub_event(7, status="canceled", event_type="subscription.canceled")
    revoked = changes_of(await apply(conn, handler.handle, deleted) or [])
    assert {c.type for c in revoked} == {"entitlement.revoked"} and len(revoked) == 3


async def test_past_due_beyond_grace_then_periodic_expiry(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    t0 = at("2025-06-01T12:00:00")
    sub = subscription([item(lookup_key="pro_monthly")], status="past_due")
    event = subscription_event("subscription.updated", sub, customer_id=customer, occurred_at=t0)
    await apply(conn, handler_at(t0).handle, event)
    assert set(await entitlement_rows(conn, customer)) == {"sso", "api_calls", "storage_gb"}

    # Other customers' schedules may be due too: look only at this one's changes.
    later = handler_at(t0 + GRACE + timedelta(seconds=1))
    async with conn.transaction():
        out = [c for c in changes_of(await later.expire(conn)) if c.customer_id == customer]
    assert {(c.type, c.caused_by) for c in out} == {("entitlement.revoked", None)}
    assert len(out) == 3 and all(c.occurred_at == t0 + GRACE for c in out)
    assert await entitlement_rows(conn, customer) == {}
    async with conn.transaction():
        again = [c for c in changes_of(await later.expire(conn)) if c.customer_id == customer]
    assert again == []


async def test_trial_expires_at_trial_end(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    t0 = at("2025-06-01T12:00:00")
    trial_end = t0 + timedelta(days=14)
    sub = subscription([item("price_team")], status="trialing", trial_end=trial_end)
    event = subscription_event("subscription.activated", sub, customer_id=customer, occurred_at=t0)
    await apply(conn, handler_at(t0).handle, event)
    rows = await entitlement_rows(conn, customer)
    assert {expires for _, expires, _ in rows.values()} == {trial_end}
    async with conn.transaction():
        await handler_at(trial_end).expire(conn)
    assert await entitlement_rows(conn, customer) == {}


async def test_partial_expiry_updates_the_limit(conn: asyncpg.Connection) -> None:
    """A short pass with a higher limit expires; the subscription's lower limit remains."""
    customer = new_customer()
    t0 = at("2025-06-01T12:00:00")
    handler = handler_at(t0)
    sub = subscription([item(lookup_key="pro_monthly")])
    await apply(
        conn,
        handler.handle,
        subscription_event("subscription.activated", sub, customer_id=customer, occurred_at=t0),
    )
    pass_event = one_off_payment(customer, t0, {"product_id": "prod_pass", "quantity": "1"})
    await apply(conn, handler.handle, pass_event)
    rows = await entitlement_rows(conn, customer)
    assert rows["export"][1] == t0 + timedelta(days=30)
    assert rows["api_calls"][0] == 1000
    async with conn.transaction():
        out = changes_of(await handler_at(t0 + timedelta(days=31)).expire(conn))
    mine = [(c.type, c.feature) for c in out if c.customer_id == customer]
    assert mine == [("entitlement.updated", "api_calls"), ("entitlement.revoked", "export")]


def one_off_payment(
    customer: str, occurred_at: datetime, metadata: dict[str, str], invoice_id: str | None = None
) -> PaymentEvent:
    raw = json.loads((FIXTURES / "payment_intent.succeeded__rubymock__1.json").read_text())
    raw["id"] = f"evt_test_{uuid.uuid4().hex}"
    raw["created"] = int(occurred_at.timestamp())
    obj = raw["data"]["object"]
    obj.update(
        customer=customer,
        metadata=metadata,
        invoice=invoice_id,
        id=f"pi_test_{uuid.uuid4().hex[:12]}",
    )
    event = normalize(raw)
    assert isinstance(event, PaymentEvent)
    return event


def paid_checkout(customer: str, **changes: Any) -> CheckoutEvent:
    event = fixture_event(FIXTURES / "checkout.session.completed__rubymock__1.json", customer)
    assert isinstance(event, CheckoutEvent)
    checkout = event.checkout.model_copy(update=changes)
    result = model_with(event, checkout=checkout.model_dump())
    assert isinstance(result, CheckoutEvent)
    return result


async def test_one_off_checkout_grants_and_maps_the_user(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    event = paid_checkout(
        customer,
        metadata={"lookup_key": "lifetime_deal"},
        client_reference_id="user_7",
        payment_intent_id=f"pi_{uuid.uuid4().hex[:12]}",
    )
    handler = handler_at(event.occurred_at)
    changes = changes_of(await apply(conn, handler.handle, event) or [])
    assert {(c.feature, c.limit, c.expires_at) for c in changes} == {
        ("export", None, None),
        ("projects", 10, None),
    }
    assert {c.user_id for c in changes} == {"user_7"}
    # The payment intent of the same purchase is the same source: nothing new.
    payment = one_off_payment(customer, event.occurred_at, {"lookup_key": "lifetime_deal"})
    payment = model_with(
        payment,
        payment={
            **payment.payment.model_dump(),
            "id": event.checkout.payment_intent_id,
            "payment_intent_id": event.checkout.payment_intent_id,
        },
    )
    assert await apply(conn, handler.handle, payment) == []
    rows = await entitlement_rows(conn, customer)
    assert rows["export"][2] == [event.checkout.payment_intent_id]


async def test_user_mapping_metadata_wins_over_checkout(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    t0 = at("2025-06-01T12:00:00")
    handler = handler_at(t0)
    checkout = paid_checkout(customer, client_reference_id="from_checkout", mode="subscription")
    await apply(conn, handler.handle, checkout)

    async def user() -> tuple[str | None, str | None]:
        row = await conn.fetchrow(
            "SELECT user_id, user_id_from FROM entitlement_customers WHERE customer_id = $1",
            customer,
        )
        assert row is not None
        return row["user_id"], row["user_id_from"]

    assert await user() == ("from_checkout", "checkout")
    newer = customer_event(customer, "from_metadata", occurred_at=t0 + timedelta(seconds=5))
    older = customer_event(customer, "stale", occurred_at=t0, event_type="customer.created")
    await apply(conn, handler.handle, newer)
    await apply(conn, handler.handle, older)
    assert await user() == ("from_metadata", "metadata")
    stub = customer_event(
        customer, None, occurred_at=t0 + timedelta(seconds=9), event_type="customer.deleted"
    )
    await apply(conn, handler.handle, stub)
    assert await user() == ("from_metadata", "metadata")


@pytest.mark.parametrize(
    ("metadata", "invoice_id"),
    [({}, None), ({"note": "gift"}, None), ({"lookup_key": "lifetime_deal"}, "in_123")],
)
async def test_payments_that_are_not_entitlement_purchases_are_ignored(
    conn: asyncpg.Connection, metadata: dict[str, str], invoice_id: str | None
) -> None:
    customer = new_customer()
    event = one_off_payment(customer, at("2025-06-01T12:00:00"), metadata, invoice_id)
    assert await apply(conn, handler_at(event.occurred_at).handle, event) == []
    assert await entitlement_rows(conn, customer) == {}


async def test_unknown_one_off_product_is_poison(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    event = one_off_payment(customer, at("2025-06-01T12:00:00"), {"price_id": "price_nope"})
    with pytest.raises(Poison, match="price_id 'price_nope': not in the catalog"):
        await apply(conn, handler_at(event.occurred_at).handle, event)
    # The transaction rolled back: a retry (after a catalog fix) is not a duplicate.
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = $1",
            event.source.stripe_event_id,
        )
        == 0
    )


async def test_unknown_subscription_price_is_poison(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    sub = subscription([item("price_nope", product_id="prod_nope")])
    event = subscription_event(
        "subscription.activated", sub, customer_id=customer, occurred_at=at("2025-06-01T12:00:00")
    )
    with pytest.raises(Poison, match=r"'price_nope'.*'prod_nope'"):
        await apply(conn, handler_at(event.occurred_at).handle, event)


async def test_expanded_product_metadata_fallback_end_to_end(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    raw = json.loads((FIXTURES / "customer.subscription.created__rubymock__1.json").read_text())
    raw["id"] = f"evt_test_{uuid.uuid4().hex}"
    obj = raw["data"]["object"]
    obj["customer"] = customer
    # Real fixture, with the price unknown to the catalog and its product expanded.
    price = obj["items"]["data"][0]["price"]
    price["id"] = "price_not_in_catalog"
    price["product"] = {
        "id": "prod_meta",
        "object": "product",
        "metadata": {"features": "sso,api_calls=2000"},
    }
    event = normalize(raw)
    out = await apply(conn, handler_at(event.occurred_at).handle, event)
    assert out is not None
    assert {
        f: (limit, exp) for f, (limit, exp, _) in (await entitlement_rows(conn, customer)).items()
    } == {
        "sso": (None, None),
        "api_calls": (2000, None),
    }


async def test_stripe_summary_replaces_and_truncated_only_adds(conn: asyncpg.Connection) -> None:
    customer = new_customer()
    path = FIXTURES / "entitlements.active_entitlement_summary.updated__syncengine__1.json"
    first = fixture_event(path, customer)
    handler = handler_at(first.occurred_at)
    await apply(conn, handler.handle, first)

    def summary(keys: list[str], seconds: int, truncated: bool) -> contracts.BillingEvent:
        event = fixture_event(path, customer)
        ents = [{"id": f"ent_{k}", "feature_id": f"feat_{k}", "lookup_key": k} for k in keys]
        return model_with(
            event,
            occurred_at=first.occurred_at + timedelta(seconds=seconds),
            summary={"entitlements": ents, "truncated": truncated},
        )

    await apply(conn, handler.handle, summary(["beta"], 2, truncated=True))
    assert set(await entitlement_rows(conn, customer)) == {"journeys", "beta"}
    out = changes_of(
        await apply(conn, handler.handle, summary(["gamma"], 3, truncated=False)) or []
    )
    assert sorted((c.type, c.feature) for c in out) == [
        ("entitlement.granted", "gamma"),
        ("entitlement.revoked", "beta"),
        ("entitlement.revoked", "journeys"),
    ]
    assert await apply(conn, handler.handle, summary([], 1, truncated=False)) == []  # older
    assert set(await entitlement_rows(conn, customer)) == {"gamma"}


async def test_event_without_customer_is_poison_only_when_it_grants(
    conn: asyncpg.Connection,
) -> None:
    ignored = one_off_payment(new_customer(), at("2025-06-01T12:00:00"), {})
    ignored = model_with(ignored, customer_id=None)
    assert await apply(conn, handler_at(ignored.occurred_at).handle, ignored) == []
    named = one_off_payment(
        new_customer(), at("2025-06-01T12:00:00"), {"lookup_key": "lifetime_deal"}
    )
    # The contract refuses it (the ingress answers 422); the worker still refuses one
    # built without validation.
    with pytest.raises(ValidationError, match="needs a customer_id"):
        model_with(named, customer_id=None)
    unchecked = named.model_copy(update={"customer_id": None})
    with pytest.raises(Poison, match="no customer"):
        await apply(conn, handler_at(unchecked.occurred_at).handle, unchecked)
