"""Each worker relays its own outbox rows under its own lock; migration 0005 hands the
rows of earlier releases to the entitlement worker, whose relay then publishes them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from billing_fleet.db import bounded_transaction, create_pool
from billing_fleet.migrate import discover
from contracts import ENTITLEMENT_CHANGES
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import create_topics, unique
from workers.runtime.dlt_admin import read_records
from workers.runtime.outbox import (
    LEGACY_RELAY_LOCK_KEY,
    OutboxRelay,
    relay_lock_key,
    write_outbox,
)
from workers.runtime.relay_sender import BatchSender, KafkaRecord
from workers.runtime.run import relay_producer
from workers.runtime.spec import Outgoing

pytestmark = pytest.mark.integration


class HeldSend:
    """A send that records its rows, then holds its relay's transaction open until
    released."""

    def __init__(self) -> None:
        self.sent: list[KafkaRecord] = []
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def __call__(self, rows: Sequence[KafkaRecord]) -> None:
        self.sent.extend(rows)
        self.entered.set()
        await self.release.wait()


def rows(topic: str, count: int) -> list[Outgoing]:
    return [
        Outgoing(topic, f"cus_{i % 2}", f"v{i}".encode(), {"ce_id": f"{i}"}) for i in range(count)
    ]


def relay(pool: asyncpg.Pool, worker: str, send: Any) -> OutboxRelay:
    return OutboxRelay(pool, send, worker=worker, ack_timeout=30, db_timeout=5)


async def test_relays_of_different_workers_run_together_of_one_worker_one_at_a_time(
    create_database: Any,
) -> None:
    pool = await create_pool(await create_database(migrated=True))
    try:
        async with bounded_transaction(pool, 5) as conn:
            await write_outbox(conn, "alpha", rows("alpha.out", 3))
            await write_outbox(conn, "beta", rows("beta.out", 2))
        held = HeldSend()
        first = asyncio.create_task(relay(pool, "alpha", held).flush())
        await asyncio.wait_for(held.entered.wait(), 10)  # alpha's relay holds its lock

        # Another worker's relay is not held up by alpha's and takes only beta's rows.
        beta_sent: list[KafkaRecord] = []

        async def beta_send(records: Sequence[KafkaRecord]) -> None:
            beta_sent.extend(records)

        assert await relay(pool, "beta", beta_send).flush() == 2
        assert {r.topic for r in beta_sent} == {"beta.out"}
        # A second relay of alpha (another replica) finds alpha's lock taken.
        assert await relay(pool, "alpha", beta_send).flush() == 0
        # A relay of a release before 0005 (one exclusive lock for all) cannot start.
        async with pool.acquire() as old, old.transaction():
            assert not await old.fetchval(
                "SELECT pg_try_advisory_xact_lock($1)", LEGACY_RELAY_LOCK_KEY
            )

        held.release.set()
        assert await asyncio.wait_for(first, 10) == 3
        assert [r.value for r in held.sent] == [b"v0", b"v1", b"v2"]
        assert {r.topic for r in held.sent} == {"alpha.out"}
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await pool.close()


async def test_an_old_release_relay_holding_its_lock_holds_every_new_relay(
    create_database: Any,
) -> None:
    pool = await create_pool(await create_database(migrated=True))
    try:
        async with bounded_transaction(pool, 5) as conn:
            await write_outbox(conn, "alpha", rows("alpha.out", 1))
        sent: list[KafkaRecord] = []

        async def send(records: Sequence[KafkaRecord]) -> None:
            sent.extend(records)

        async with pool.acquire() as old, old.transaction():
            assert await old.fetchval("SELECT pg_try_advisory_xact_lock($1)", LEGACY_RELAY_LOCK_KEY)
            assert await relay(pool, "alpha", send).flush() == 0
        assert await relay(pool, "alpha", send).flush() == 1
        assert len(sent) == 1
    finally:
        await pool.close()


def test_the_lock_key_is_stable_per_worker_and_differs_between_workers() -> None:
    assert relay_lock_key("entitlement") == relay_lock_key("entitlement")
    assert relay_lock_key("entitlement") != relay_lock_key("notification")
    assert -(2**63) <= relay_lock_key("entitlement") < 2**63
    assert LEGACY_RELAY_LOCK_KEY not in {relay_lock_key("entitlement"), relay_lock_key("")}


async def test_migration_0005_assigns_earlier_rows_to_the_entitlement_worker_which_relays_them(
    settings: FleetSettings, create_database: Any
) -> None:
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    other = unique("legacy.other")
    await create_topics(settings, other)
    url = await create_database(migrated=False)
    runtime = [m for m in discover(("workers.runtime",))]
    before = [m for m in runtime if m.name < "0005"]
    upgrade = next(m for m in runtime if m.name.startswith("0005_"))
    conn = await asyncpg.connect(url)
    try:
        for migration in before:
            await conn.execute(migration.sql)
        # Rows as a release before 0005 wrote them: no worker column.
        change_key, other_key = unique("cus_legacy").encode(), unique("cus_other").encode()
        await conn.execute(
            "INSERT INTO outbox (topic, key, value, headers) VALUES"
            " ($1, $2, 'c1', '{\"ce_id\": \"c1\"}'), ($1, $2, 'c2', '{\"ce_id\": \"c2\"}'),"
            " ($3, $4, 'o1', '{}')",
            ENTITLEMENT_CHANGES,
            change_key,
            other,
            other_key,
        )
        await conn.execute(upgrade.sql)
        owners = await conn.fetch("SELECT DISTINCT worker FROM outbox")
        # An insert of the previous release (during a rolling upgrade) is the entitlement
        # worker's too.
        await conn.execute(
            "INSERT INTO outbox (topic, key, value) VALUES ($1, $2, 'c3')",
            ENTITLEMENT_CHANGES,
            change_key,
        )
    finally:
        await conn.close()
    assert [row["worker"] for row in owners] == ["entitlement"]

    producer = relay_producer(settings, "entitlement")
    pool = await create_pool(url)
    try:
        await producer.start()
        upgraded = OutboxRelay(
            pool, BatchSender(producer).send_all, worker="entitlement", ack_timeout=10, db_timeout=5
        )
        assert await upgraded.flush() == 4
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await producer.stop()
        await pool.close()
    changes = [r for r in await read_records(bootstrap, ENTITLEMENT_CHANGES) if r.key == change_key]
    assert [r.value for r in changes] == [b"c1", b"c2", b"c3"]
    assert [(r.key, r.value) for r in await read_records(bootstrap, other)] == [(other_key, b"o1")]
