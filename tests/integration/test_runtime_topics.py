"""A worker consuming two topics: billing events and entitlement changes, each with its own
consumer, idempotency key space and dead-letter topic; poison on one holds not the other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from contracts import BILLING_EVENTS, dead_letter_topic
from contracts.entitlements import entitlement_change_json
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    metric,
    prepare_tables,
    publish,
    publish_events,
    running,
    toy_spec,
    unique,
    wait_for,
    wait_for_dead_letters,
    worker_settings,
)
from workers.runtime.dlt_admin import dead_letter_topics, read_records

pytestmark = pytest.mark.integration


def change(customer: str) -> tuple[str, tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """A change's id and its message (value, key, headers)."""
    change_id = str(uuid.uuid4())
    value = entitlement_change_json(
        id=change_id,
        type="entitlement.granted",
        occurred_at=datetime.now(UTC),
        customer_id=customer,
        user_id=None,
        feature="sso",
        entitled=True,
        limit=None,
        expires_at=None,
        sources=["sub_1"],
        caused_by="evt_1",
    )
    headers = [("ce_id", change_id.encode()), ("ce_type", b"entitlement.granted")]
    return change_id, (value, customer.encode(), headers)


async def consumers_of(url: str, event_ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT consumer, event_id FROM processed_events WHERE event_id = ANY($1)", event_ids
        )
    finally:
        await conn.close()
    return {row["event_id"]: row["consumer"] for row in rows}


async def test_poison_on_one_topic_is_dead_lettered_there_while_the_other_applies(
    settings: FleetSettings,
) -> None:
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, url = settings.kafka_bootstrap_servers, settings.database_url
    name = unique("toy")
    events_topic, changes_topic = unique("topics.events"), unique("topics.changes")
    await prepare_tables(url)
    await create_topics(settings, events_topic)
    await create_topics(settings, changes_topic, partitions=1)
    spec = toy_spec(name, events_topic, changes_topic=changes_topic)
    assert spec.topics == (events_topic, changes_topic)

    first_id, first = change("cus_a")
    last_id, last = change("cus_b")
    # Not a change at all, typed as one: poison, between two good changes.
    poison = (b"{not json", b"cus_a", [("ce_type", b"entitlement.granted")])
    await publish(bootstrap, changes_topic, [first, poison, last])
    events = make_events(12)
    event_ids = [e.source.stripe_event_id for e in events]

    # First run: the poison's retry waits a minute, and the events published meanwhile
    # on the other topic are all applied before it is over.
    slow_retries = worker_settings(
        settings, worker_retry_backoff_seconds=[60], worker_max_attempts=2
    )
    async with running(spec, slow_retries):
        await wait_for(
            lambda: _metric_at_least("billing_retries_total", 1, worker=name, reason="poison"),
            message="the poison message failed once",
        )
        await publish_events(bootstrap, events_topic, events)
        await wait_for(
            lambda: _applied_include(url, name, event_ids), message="every billing event applied"
        )
    # Stopped during the retry's wait: the changes' batch was given back uncommitted.
    assert await read_records(bootstrap, dead_letter_topic(changes_topic, name)) == []

    async with running(spec, worker_settings(settings)):
        letters = await wait_for_dead_letters(bootstrap, dead_letter_topic(changes_topic, name), 1)
        await wait_for(
            lambda: _applied_include(url, name, [first_id, last_id]), message="both changes applied"
        )
    assert [letter.value for letter in letters] == [b"{not json"]
    assert letters[0].header("dlt_origin_topic") == changes_topic
    assert letters[0].header("dlt_consumer_group") == name
    assert await read_records(bootstrap, dead_letter_topic(events_topic, name)) == []
    # dlt list/show/replay find every topic's dead letters by the worker's group.
    assert dead_letter_topic(changes_topic, name) in await dead_letter_topics(bootstrap, name)
    # The type label of a message that did not parse is one of its topic's contract types.
    dead = metric(
        "billing_events_handled_total",
        worker=name,
        type="entitlement.granted",
        outcome="dead_lettered",
    )
    assert dead == 1

    rows = await applied(url, name)
    assert sorted(rows) == sorted([*event_ids, first_id, last_id]), "something applied twice"
    # Each topic its own key space: the first topic's under the worker's name.
    keys = await consumers_of(url, [*event_ids, first_id, last_id])
    assert {keys[i] for i in event_ids} == {name}
    assert {keys[first_id], keys[last_id]} == {f"{name}@{changes_topic}"}


def test_the_consumer_key_of_a_later_topic_names_it() -> None:
    spec = toy_spec("toy", BILLING_EVENTS, changes_topic="entitlements.changes.v1")
    first, second = spec.subscriptions
    assert spec.consumer_key(first) == "toy"
    assert spec.consumer_key(second) == "toy@entitlements.changes.v1"
    with pytest.raises(ValueError, match="twice"):
        toy_spec("toy", BILLING_EVENTS, changes_topic=BILLING_EVENTS)
    with pytest.raises(ValueError, match="'@'"):
        toy_spec("to@y", BILLING_EVENTS)


async def _metric_at_least(name: str, value: float, **labels: str) -> bool:
    return metric(name, **labels) >= value


async def _applied_include(url: str, name: str, ids: list[str]) -> bool:
    return set(ids) <= set(await applied(url, name))
