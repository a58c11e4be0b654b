"""The outbox relay publishes the handler's rows in order, with key and headers, once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka.partitioner import DefaultPartitioner

from billing_fleet.db import bounded_transaction, create_pool
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    create_topics,
    make_events,
    metric,
    prepare_tables,
    publish_events,
    running,
    toy_spec,
    unique,
    worker_settings,
)
from workers.runtime.dlt_admin import read_records
from workers.runtime.outbox import OutboxRelay, write_outbox
from workers.runtime.relay_sender import KafkaRecord
from workers.runtime.spec import Outgoing

pytestmark = pytest.mark.integration
PARTITIONS = 3


async def test_outbox_rows_are_published_in_order_then_deleted(
    settings: FleetSettings, kafka_messages: Any
) -> None:
    settings = worker_settings(settings)
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, url = settings.kafka_bootstrap_servers, settings.database_url
    name, topic, out = unique("toy"), unique("runtime.in"), unique("runtime.out")
    await prepare_tables(url)
    await create_topics(settings, topic, out, partitions=PARTITIONS)
    events = make_events(16, customers=4)
    await publish_events(bootstrap, topic, events)

    async with running(toy_spec(name, topic, out_topic=out), settings):
        records = await kafka_messages(out, expect=len(events), timeout=20)

    assert len(records) == len(events)
    # Each key on the partition Kafka's default partitioner (any producer) picks for it.
    choose = DefaultPartitioner()
    assert all(r.partition == choose(r.key, list(range(PARTITIONS)), []) for r in records)
    assert len({r.partition for r in records}) > 1
    for customer in ("cus_toy0", "cus_toy1", "cus_toy2", "cus_toy3"):
        sent = [e.source.stripe_event_id for e in events if e.customer_id == customer]
        got = [r for r in records if r.key == customer.encode()]
        assert [dict(r.headers)["ce_id"].decode() for r in got] == [f"toy-{s}" for s in sent]
        assert all(dict(r.headers)["ce_type"] == b"toy.applied" for r in got)
    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", out)
    finally:
        await conn.close()
    assert left == 0
    assert metric("billing_outbox_published_total", worker=name) == len(events)

    # A relay started afresh (a restart) finds nothing to send: relayed rows are gone.
    sent_again: list[KafkaRecord] = []

    async def send_all(rows: Sequence[KafkaRecord]) -> None:
        sent_again.extend(rows)
        raise AssertionError("a published row was sent again")

    pool = await create_pool(url)
    try:
        assert (
            await OutboxRelay(pool, send_all, worker=name, ack_timeout=5, db_timeout=5).flush() == 0
        )
    finally:
        await pool.close()
    assert sent_again == []
    assert len(await read_records(bootstrap, out)) == len(events)


async def test_a_failed_send_deletes_nothing_and_the_next_flush_sends_all_in_order(
    create_database: Any,
) -> None:
    rows = [
        Outgoing("relay.out", f"cus_{i % 2}", f"v{i}".encode(), {"ce_id": f"id{i}"})
        for i in range(5)
    ]
    sent: list[KafkaRecord] = []

    async def broker_down(records: Sequence[KafkaRecord]) -> None:
        raise ConnectionError("broker down")

    async def broker_up(records: Sequence[KafkaRecord]) -> None:
        sent.extend(records)

    pool = await create_pool(await create_database(migrated=True))
    try:
        async with bounded_transaction(pool, 5) as conn:
            await write_outbox(conn, "relay", rows)
        with pytest.raises(ConnectionError):
            await OutboxRelay(
                pool, broker_down, worker="relay", ack_timeout=5, db_timeout=5
            ).flush()
        assert await pool.fetchval("SELECT count(*) FROM outbox") == len(rows)

        assert (
            await OutboxRelay(pool, broker_up, worker="relay", ack_timeout=5, db_timeout=5).flush()
            == 5
        )
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await pool.close()
    assert sent == [
        KafkaRecord(
            "relay.out", f"cus_{i % 2}".encode(), f"v{i}".encode(), [("ce_id", f"id{i}".encode())]
        )
        for i in range(5)
    ]
