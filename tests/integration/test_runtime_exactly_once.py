"""Exactly-once effects: duplicates and redeliveries change nothing and are counted."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    metric,
    prepare_tables,
    publish_events,
    running,
    toy_spec,
    unique,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration


async def test_duplicates_and_redelivery_change_nothing(settings: FleetSettings) -> None:
    settings = worker_settings(settings)
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, url = settings.kafka_bootstrap_servers, settings.database_url
    name, topic = unique("toy"), unique("runtime.events")
    await prepare_tables(url)
    await create_topics(settings, topic)
    spec = toy_spec(name, topic)
    events = make_events(6)
    # The same event twice in a row (one batch) and once more later.
    await publish_events(bootstrap, topic, [*events, events[0]])

    async with running(spec, settings):
        await wait_for(lambda: _count(url, name, 6), message="first delivery applied")
        await wait_for(
            lambda: _at_least(metric("billing_duplicates_skipped_total", worker=name), 1),
            message="in-batch duplicate counted",
        )
        await publish_events(bootstrap, topic, [events[1]])
        await wait_for(
            lambda: _at_least(metric("billing_duplicates_skipped_total", worker=name), 2),
            message="later duplicate counted",
        )

    # After a restart, every event arrives again (a Stripe retry through the gateway).
    async with running(spec, settings):
        await publish_events(bootstrap, topic, events)
        await wait_for(
            lambda: _at_least(metric("billing_duplicates_skipped_total", worker=name), 8),
            message="redelivered messages counted as duplicates",
        )

    rows = await applied(url, name)
    assert Counter(rows) == Counter(e.source.stripe_event_id for e in events)
    assert (
        metric(
            "billing_events_handled_total",
            worker=name,
            type="subscription.activated",
            outcome="applied",
        )
        == 6
    )


async def _count(url: str, name: str, expected: int) -> bool:
    return len(await applied(url, name)) >= expected


async def _at_least(value: float, expected: float) -> bool:
    return value >= expected
