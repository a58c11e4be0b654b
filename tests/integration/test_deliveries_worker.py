"""A worker whose handler returns deliveries, through ``run_worker``: Kafka → HTTP."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import asyncpg
import pytest

from tests.deliveries_support import rows
from tests.deliveries_toy import webhook_spec
from tests.fleet_settings import FleetSettings
from tests.http_receiver import Receiver
from tests.runtime_toy import (
    create_topics,
    make_events,
    metric,
    publish_events,
    running,
    unique,
    wait_for,
    worker_settings,
)
from workers.runtime.deliveries.model import Delivery
from workers.runtime.spec import Effect

pytestmark = pytest.mark.integration


async def test_each_event_reaches_the_receiver_exactly_once(settings: FleetSettings) -> None:
    assert settings.kafka_bootstrap_servers and settings.database_url
    name, topic = unique("dl-toy"), unique("dl-events")
    await create_topics(settings, topic)
    receiver = Receiver()
    await receiver.start()
    events = make_events(6)
    expected = {f"{name}-{event.id}" for event in events}
    spec = webhook_spec(name, topic, receiver.url("/hook"))
    try:
        # A long poll: it is the wake after each commit that sends them (no timing asserted).
        async with running(spec, worker_settings(settings, delivery_poll_seconds=5.0)):
            # Redelivered events (the same ids again) come in between.
            await publish_events(settings.kafka_bootstrap_servers, topic, events + events[:3])

            async def all_arrived() -> bool:
                return set(receiver.ids("/hook")) == expected

            await wait_for(all_arrived, message="every event's webhook")

            async def all_recorded() -> bool:
                return {r["status"] for r in await rows(settings.database_url or "", name)} == {
                    "sent"
                }

            await wait_for(all_recorded, message="every delivery recorded as sent")
            assert (
                metric("billing_deliveries_total", worker=name, channel="http", outcome="sent") == 6
            )
        assert receiver.ids("/hook", receiver.requests) == {key: 1 for key in expected}
        assert len(await rows(settings.database_url, name)) == 6
        sent = {json.loads(receiver.bodies[key])["stripe_event_id"] for key in expected}
        assert sent == {event.source.stripe_event_id for event in events}
    finally:
        await receiver.stop()


async def test_a_periodic_job_s_delivery_reaches_the_receiver(settings: FleetSettings) -> None:
    assert settings.kafka_bootstrap_servers and settings.database_url
    name, topic = unique("dl-tick"), unique("dl-tick-events")
    await create_topics(settings, topic)
    receiver = Receiver()
    await receiver.start()
    ticks = 0

    async def tick(conn: asyncpg.Connection) -> Sequence[Effect]:
        nonlocal ticks
        ticks += 1
        # The same key every tick: one row, one webhook, however often it runs.
        return [Delivery.json("http", receiver.url("/tick"), f"{name}-daily", {"tick": ticks})]

    spec = dataclasses.replace(
        webhook_spec(name, topic, receiver.url("/hook")),
        periodic=tick,
        periodic_interval_seconds=0.2,
    )
    try:
        async with running(spec, worker_settings(settings, delivery_poll_seconds=5.0)):
            await wait_for(lambda: _arrived(receiver, "/tick"), message="the periodic webhook")

            async def several_ticks() -> bool:
                return ticks >= 3

            await wait_for(several_ticks, message="more ticks after the first")
        assert receiver.ids("/tick", receiver.requests) == {f"{name}-daily": 1}
        assert json.loads(receiver.bodies[f"{name}-daily"]) == {"tick": 1}
        assert [r["status"] for r in await rows(settings.database_url, name)] == ["sent"]
    finally:
        await receiver.stop()


async def _arrived(receiver: Receiver, path: str) -> bool:
    return bool(receiver.ids(path))
