"""The real entitlement worker (``build`` + ``run_worker``) on the real broker and PostgreSQL:
normalized Stripe fixtures in, entitlements rows and ``entitlements.changes.v1`` out; an
event the catalog cannot map is dead-lettered while its partition moves on, and applied
exactly once when it is replayed after the catalog was fixed.

Each test uses its own input topic (so the consumer group ``entitlement`` starts from an
empty topic) and fresh customer ids; ``entitlements.changes.v1`` is shared by the
session, so its records are filtered by key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from api_gateway.normalize import normalize
from contracts import (
    ENTITLEMENT_CHANGES,
    BillingEvent,
    EntitlementChange,
    SubscriptionEvent,
    dead_letter_topic,
    parse_entitlement_change,
)
from tests.entitlement_support import TEST_CATALOG_YAML, entitlement_rows
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    create_topics,
    metric,
    publish_events,
    running,
    unique,
    wait_for,
    wait_for_dead_letters,
    worker_settings,
)
from tests.stripe_fixtures import load_event
from workers.entitlement.handler import CE_SOURCE
from workers.entitlement.worker import NAME, build
from workers.runtime.dlt_admin import DeadLetter, read_records, replay_dead_letters
from workers.runtime.spec import WorkerSpec

pytestmark = pytest.mark.integration

SYNCENGINE_CREATED = "customer.subscription.created__syncengine__1"  # price_1IDQm5JD…: sso, 500
DRF_CREATED = "customer.subscription.created__drfstripe__1"  # prod_KxfXRXOd7dnLbz: sso, 1000
CUSTOMER_CREATED = "customer.created__nijikokun__1"
SYNCENGINE_PRICE = "price_1IDQm5JDPojXS6LNM31hxKzp"
FIXED_ENTRY = """
  fixed_price:
    prices: [{price}]
    features: {{beta: true}}
"""
CE_HEADERS = {"ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "ce_subject"}


def new_customer() -> str:
    return f"cus_worker_{uuid.uuid4().hex[:14]}"


def fixture_event(
    name: str, customer_id: str, *, replace: dict[str, str] | None = None, **metadata: str
) -> BillingEvent:
    """The fixture (fresh Stripe event id) as the gateway normalizes it, for ``customer_id``;
    ``replace`` rewrites ids in the raw JSON, ``metadata`` sets the customer's metadata."""
    raw: dict[str, Any] = load_event(name)
    obj = raw["data"]["object"]
    if obj["object"] == "customer":
        obj["id"], obj["metadata"] = customer_id, dict(metadata)
    else:
        obj["customer"] = customer_id
    text = json.dumps(raw)
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    return normalize(json.loads(text))


def subscription_fixture(
    name: str, customer_id: str, *, replace: dict[str, str] | None = None
) -> SubscriptionEvent:
    event = fixture_event(name, customer_id, replace=replace)
    assert isinstance(event, SubscriptionEvent)
    return event


def write_catalog(path: Path, extra: str = "") -> Path:
    path.write_text(TEST_CATALOG_YAML + extra)
    return path


def catalog_settings(settings: FleetSettings, catalog: Path) -> tuple[FleetSettings, str, str]:
    """Worker settings on the test catalog written to ``catalog``; with the bootstrap
    servers and database URL they carry."""
    settings = worker_settings(settings, entitlement_catalog_path=write_catalog(catalog))
    assert settings.kafka_bootstrap_servers and settings.database_url
    return settings, settings.kafka_bootstrap_servers, settings.database_url


def entitlement_spec(settings: FleetSettings, topic: str) -> WorkerSpec:
    """The real worker, as ``billing-fleet worker entitlement`` builds it, on ``topic``."""
    spec = build(settings)
    assert spec.name == NAME
    return spec.consuming(topic)


async def changes_for(
    bootstrap: str, customer_id: str, *, count: int
) -> list[tuple[DeadLetter, EntitlementChange]]:
    """The records of ``entitlements.changes.v1`` keyed ``customer_id``, once ``count``
    arrived (with their parsed value)."""
    found: list[tuple[DeadLetter, EntitlementChange]] = []

    async def arrived() -> bool:
        records = await read_records(bootstrap, ENTITLEMENT_CHANGES)
        found[:] = [
            (r, parse_entitlement_change(r.value)) for r in records if r.key == customer_id.encode()
        ]
        return len(found) >= count

    await wait_for(arrived, message=f"{count} changes of {customer_id}")
    return found


async def features_of(url: str, customer_id: str) -> dict[str, int | None]:
    conn = await asyncpg.connect(url)
    try:
        rows = await entitlement_rows(conn, customer_id)
    finally:
        await conn.close()
    return {feature: limit for feature, (limit, _, _) in rows.items()}


async def processed(url: str, stripe_event_ids: Sequence[str]) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT event_id FROM processed_events WHERE consumer = $1 AND event_id = ANY($2)",
            NAME,
            list(stripe_event_ids),
        )
    finally:
        await conn.close()
    return [row["event_id"] for row in rows]


async def test_subscription_events_grant_and_publish_changes(
    settings: FleetSettings, tmp_path: Path
) -> None:
    settings, bootstrap, url = catalog_settings(settings, tmp_path / "catalog.yaml")
    topic = unique("entitlement.events")
    await create_topics(settings, topic)
    alice, bob = new_customer(), new_customer()
    user = unique("user")
    alice_sub = subscription_fixture(SYNCENGINE_CREATED, alice)
    bob_sub = subscription_fixture(DRF_CREATED, bob)
    events = [fixture_event(CUSTOMER_CREATED, alice, user_id=user), alice_sub, bob_sub]
    await publish_events(bootstrap, topic, events)

    async with running(entitlement_spec(settings, topic), settings):
        await changes_for(bootstrap, alice, count=2)
        await changes_for(bootstrap, bob, count=2)
    # Read again once the worker stopped: a change published twice would show now.
    alice_changes = await changes_for(bootstrap, alice, count=2)
    bob_changes = await changes_for(bootstrap, bob, count=2)

    assert await features_of(url, alice) == {"sso": None, "api_calls": 500}
    assert await features_of(url, bob) == {"sso": None, "api_calls": 1000}
    ids = [e.source.stripe_event_id for e in events]
    assert sorted(await processed(url, ids)) == sorted(ids)

    for customer, subscription_event, records, limits in [
        (alice, alice_sub, alice_changes, {"sso": None, "api_calls": 500}),
        (bob, bob_sub, bob_changes, {"sso": None, "api_calls": 1000}),
    ]:
        assert len(records) == 2, "a change was published twice"
        assert {change.feature: change.limit for _, change in records} == limits
        for record, change in records:
            headers = {name: record.header(name) for name, _ in record.headers}
            assert headers.keys() >= CE_HEADERS
            assert headers["ce_specversion"] == "1.0"
            assert headers["ce_type"] == change.type == "entitlement.granted"
            assert headers["ce_id"] == str(change.id)
            assert headers["ce_source"] == CE_SOURCE
            assert headers["ce_subject"] == customer == change.customer_id
            assert headers["content-type"] == "application/json"
            assert change.entitled and change.expires_at is None
            assert change.caused_by == subscription_event.source.stripe_event_id
            assert change.sources == [subscription_event.subscription.id]
    # The customer event came first on alice's partition: her changes name her user.
    assert {change.user_id for _, change in alice_changes} == {user}
    assert {change.user_id for _, change in bob_changes} == {None}


async def test_unmapped_price_is_dead_lettered_then_replayed_once(
    settings: FleetSettings, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    settings, bootstrap, url = catalog_settings(settings, catalog)
    topic = unique("entitlement.poison")
    dlt = dead_letter_topic(topic, NAME)
    await create_topics(settings, topic, partitions=1)
    customer = new_customer()
    unknown_price = f"price_unknown_{uuid.uuid4().hex[:12]}"
    # The real fixture with a price in neither the catalog nor (unexpanded) product metadata.
    poison = subscription_fixture(
        SYNCENGINE_CREATED, customer, replace={SYNCENGINE_PRICE: unknown_price}
    )
    behind = subscription_fixture(DRF_CREATED, customer)  # same key, same partition, after it
    await publish_events(bootstrap, topic, [poison, behind])
    poison_id = poison.source.stripe_event_id
    dead_before = metric("billing_dead_letters_total", worker=NAME)

    async with running(entitlement_spec(settings, topic), settings):
        letters = await wait_for_dead_letters(bootstrap, dlt, 1)

        async def behind_applied() -> bool:
            return await features_of(url, customer) == {"sso": None, "api_calls": 1000}

        await wait_for(behind_applied, message="the event behind the poison applied")

    [letter] = letters
    assert (letter.key, letter.value) == (customer.encode(), poison.model_dump_json().encode())
    assert letter.header("ce_id") == str(poison.id)
    assert letter.header("dlt_error_class") == "workers.runtime.spec.Poison"
    assert unknown_price in letter.header("dlt_error_message")
    assert letter.header("dlt_attempts") == str(settings.worker_max_attempts)
    assert letter.header("dlt_origin_topic") == topic
    assert (letter.header("dlt_origin_partition"), letter.header("dlt_origin_offset")) == ("0", "0")
    assert letter.header("dlt_consumer_group") == NAME
    assert letter.header("dlt_first_failure_at") <= letter.header("dlt_last_failure_at")
    assert metric("billing_dead_letters_total", worker=NAME) == dead_before + 1
    assert await processed(url, [poison_id]) == []
    # Only the event behind it changed entitlements.
    assert {c.caused_by for _, c in await changes_for(bootstrap, customer, count=2)} == {
        behind.source.stripe_event_id
    }

    # The catalog is fixed; the worker restarts with it and the dead letter is replayed.
    write_catalog(catalog, FIXED_ENTRY.format(price=unknown_price))
    duplicates_before = metric("billing_duplicates_skipped_total", worker=NAME)
    async with running(entitlement_spec(settings, topic), settings):
        where = [(letter.partition, letter.offset)]
        await replay_dead_letters(bootstrap, url, dlt, offsets=where)
        await changes_for(bootstrap, customer, count=3)
        # A second replay is a duplicate for the worker: skipped, nothing changes.
        await replay_dead_letters(bootstrap, url, dlt, offsets=where)

        async def skipped() -> bool:
            return metric("billing_duplicates_skipped_total", worker=NAME) >= duplicates_before + 1

        await wait_for(skipped, message="the second replay skipped as a duplicate")

    assert await features_of(url, customer) == {"sso": None, "api_calls": 1000, "beta": None}
    assert await processed(url, [poison_id]) == [poison_id]
    changes = await changes_for(bootstrap, customer, count=3)
    assert len(changes) == 3, "the replayed event's change was published twice"
    [beta] = [change for _, change in changes if change.caused_by == poison_id]
    assert (beta.type, beta.feature, beta.limit) == ("entitlement.granted", "beta", None)
    assert beta.sources == [poison.subscription.id]


def stripe_event(name: str, customer_id: str, created: int, **changes: Any) -> BillingEvent:
    """The fixture for ``customer_id`` at ``created``, its object updated with ``changes``."""
    raw: dict[str, Any] = load_event(name)
    raw["created"] = created
    obj = raw["data"]["object"]
    obj.update(changes)
    if obj["object"] == "customer":
        obj["id"] = customer_id
    else:
        obj["customer"] = customer_id
    return normalize(raw)


async def test_refund_and_user_change_are_published_through_the_outbox(
    settings: FleetSettings, tmp_path: Path
) -> None:
    settings, bootstrap, url = catalog_settings(settings, tmp_path / "catalog.yaml")
    topic = unique("entitlement.refunds")
    await create_topics(settings, topic)
    customer, intent = new_customer(), f"pi_{uuid.uuid4().hex[:16]}"
    first, second = unique("user"), unique("user")
    t = 1_750_000_000
    events = [
        stripe_event(CUSTOMER_CREATED, customer, t, metadata={"user_id": first}),
        stripe_event(
            "payment_intent.succeeded__rubymock__1",
            customer,
            t + 1,
            id=intent,
            metadata={"lookup_key": "lifetime_deal"},
        ),
        stripe_event(
            "customer.updated__rubymock__1", customer, t + 2, metadata={"user_id": second}
        ),
        stripe_event("charge.refunded__rubymock__1", customer, t + 3, payment_intent=intent),
    ]
    await publish_events(bootstrap, topic, events)

    async with running(entitlement_spec(settings, topic), settings):
        await changes_for(bootstrap, customer, count=8)
    records = await changes_for(bootstrap, customer, count=8)

    assert len(records) == 8, "a change was published twice"
    purchase, moved, refund = events[1], events[2], events[3]
    assert [(c.type, c.user_id, c.caused_by) for _, c in records] == [
        ("entitlement.granted", first, purchase.source.stripe_event_id),
    ] * 2 + [
        ("entitlement.revoked", first, moved.source.stripe_event_id),
    ] * 2 + [
        ("entitlement.granted", second, moved.source.stripe_event_id),
    ] * 2 + [
        ("entitlement.revoked", second, refund.source.stripe_event_id),
    ] * 2
    assert all(record.header("ce_type") == change.type for record, change in records)
    assert await features_of(url, customer) == {}
