"""Outage: PostgreSQL stops mid-stream; messages wait (no dead letters, no commits)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from billing_fleet.migrate import migrate
from contracts import dead_letter_topic
from fleet.embedded import EmbeddedPostgres
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    prepare_tables,
    publish_events,
    running,
    toy_spec,
    unique,
    wait_for,
    worker_settings,
)
from workers.registry import migration_packages
from workers.runtime.dlt_admin import read_records

pytestmark = pytest.mark.integration


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets over all partitions."""
    # An OffsetFetch without joining the group (Tansu's admin API cannot list them).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in partitions]
    finally:
        await consumer.stop()
    return sum(offset or 0 for offset in offsets)


async def test_postgres_outage_waits_then_applies_everything_once(
    settings: FleetSettings, tmp_path: Path
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pgdata")  # data kept across stop/start
    url = postgres.start().url
    try:
        await migrate(url, migration_packages())
        await prepare_tables(url)
        settings = worker_settings(settings, database_url=url)
        assert settings.kafka_bootstrap_servers
        bootstrap = settings.kafka_bootstrap_servers
        name, topic = unique("toy"), unique("runtime.outage")
        await create_topics(settings, topic)
        before, during = make_events(4), make_events(6)

        async with running(toy_spec(name, topic), settings):
            await publish_events(bootstrap, topic, before)
            await wait_for(lambda: _has(url, name, 4), message="events before the outage")
            await wait_for(lambda: _committed_is(bootstrap, name, topic, 4), message="first commit")

            await asyncio.to_thread(postgres.stop)
            await publish_events(bootstrap, topic, during)
            await asyncio.sleep(3)  # several dependency retries while the database is down
            assert await committed(bootstrap, name, topic) == 4
            assert await read_records(bootstrap, dead_letter_topic(topic, name)) == []
            retries = REGISTRY.get_sample_value(
                "billing_retries_total", {"worker": name, "reason": "dependency"}
            )
            assert retries is not None and retries >= 2

            await asyncio.to_thread(postgres.start)
            await wait_for(lambda: _has(url, name, 10), message="events after the outage")
            await wait_for(
                lambda: _committed_is(bootstrap, name, topic, 10), message="final commit"
            )

        rows = await applied(url, name)
        assert sorted(rows) == sorted(e.source.stripe_event_id for e in [*before, *during])
        assert await read_records(bootstrap, dead_letter_topic(topic, name)) == []
    finally:
        await asyncio.to_thread(postgres.stop)


async def _has(url: str, name: str, count: int) -> bool:
    return len(await applied(url, name)) >= count


async def _committed_is(bootstrap: str, group: str, topic: str, expected: int) -> bool:
    return await committed(bootstrap, group, topic) == expected
