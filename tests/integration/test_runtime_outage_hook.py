"""``WorkerSpec.is_outage``: a worker's own dependency errors wait like a database outage
instead of dead-lettering the message."""

from __future__ import annotations

import asyncpg
import pytest

from contracts import dead_letter_topic
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    metric,
    prepare_tables,
    publish_events,
    running,
    toy_outage,
    toy_spec,
    unique,
    wait_for,
    wait_for_dead_letters,
    worker_settings,
)
from workers.runtime.dlt_admin import read_records

pytestmark = pytest.mark.integration


async def execute(url: str, sql: str, *args: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_an_error_the_worker_calls_an_outage_is_retried_and_never_dead_lettered(
    settings: FleetSettings,
) -> None:
    settings = worker_settings(settings, worker_max_attempts=1)
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, url = settings.kafka_bootstrap_servers, settings.database_url
    await prepare_tables(url)
    events = make_events(3)
    ids = sorted(e.source.stripe_event_id for e in events)

    # With the hook: the batch waits while the service is down, then applies.
    name, topic = unique("toy"), unique("runtime.hook")
    await create_topics(settings, topic)
    await publish_events(bootstrap, topic, events)
    await execute(url, "INSERT INTO toy_down VALUES ($1)", name)
    async with running(toy_spec(name, topic, is_outage=toy_outage), settings):
        await wait_for(
            lambda: _at_least(3, "billing_retries_total", worker=name, reason="dependency"),
            message="dependency retries",
        )
        assert await applied(url, name) == []
        await execute(url, "DELETE FROM toy_down WHERE consumer = $1", name)
        await wait_for(lambda: _applied_are(url, name, ids), message="applied once it is back")
    assert await read_records(bootstrap, dead_letter_topic(topic, name)) == []
    assert metric("billing_dead_letters_total", worker=name) == 0

    # Without it, the same error is the message's fault: dead-lettered.
    name, topic = unique("toy"), unique("runtime.nohook")
    await create_topics(settings, topic)
    await publish_events(bootstrap, topic, events)
    await execute(url, "INSERT INTO toy_down VALUES ($1)", name)
    async with running(toy_spec(name, topic), settings):
        letters = await wait_for_dead_letters(bootstrap, dead_letter_topic(topic, name), 3)
    assert {letter.header("dlt_error_class") for letter in letters} == {
        "tests.runtime_toy.ToyServiceDown"
    }


async def _at_least(value: float, name: str, **labels: str) -> bool:
    return metric(name, **labels) >= value


async def _applied_are(url: str, name: str, ids: list[str]) -> bool:
    return sorted(await applied(url, name)) == ids
