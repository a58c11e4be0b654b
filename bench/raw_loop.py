"""The loop of the worker benchmark's ceilings: aiokafka batches, the worker's lanes, no
framework.

aiokafka reads ``billing.events.v1`` in batches (the worker's batch size and fetch wait).
A batch is split by key into the worker's number of lanes, each lane handed to the
ceiling's ``Apply`` on its own connection, run concurrently as the worker's lanes are;
offsets are committed after the lanes finished. The process has the worker's GC
settings. What a lane writes is the ceiling's own (``bench.raw_consumer`` for the
entitlement worker, ``bench.raw_ledger`` for the invoice worker); each starts its process
with ``main``.

Usage: ``python -m bench.raw_consumer|raw_ledger BOOTSTRAP DATABASE_URL GROUP BATCH EXPECT
FETCH_WAIT_MS LANES``; exits once EXPECT records were applied (or on SIGINT/SIGTERM).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeAlias

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from billing_fleet.gc_tuning import BATCH_YOUNG_THRESHOLD, freeze_startup
from billing_fleet.signals import ShutdownSignals
from contracts import BILLING_EVENTS
from workers.runtime.consumer import POLL_TIMEOUT_MS

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
Apply: TypeAlias = Callable[[asyncpg.Connection, str, Sequence[Record]], Coroutine[Any, Any, None]]
"""One lane's records, applied in one transaction of its own on the connection; the
group is the ``processed_events`` consumer."""
Prepare: TypeAlias = Callable[[asyncpg.Connection], Awaitable[Apply]]
"""Makes the ``Apply`` once, before the first batch (it may read the schema)."""

CLAIM = """
INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING RETURNING event_id
"""


async def claim(conn: asyncpg.Connection, consumer: str, ids: Sequence[str]) -> set[str]:
    """The dedupe insert: the ids of ``ids`` that are new for ``consumer``."""
    return {row[0] for row in await conn.fetch(CLAIM, consumer, list(ids))}


async def consume(
    prepare: Prepare,
    bootstrap: str,
    database_url: str,
    group: str,
    batch: int,
    expect: int,
    fetch_wait_ms: int,
    lanes: int,
) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(lanes)]
    apply = await prepare(conns[0])
    consumer = AIOKafkaConsumer(
        BILLING_EVENTS,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
        fetch_max_wait_ms=fetch_wait_ms,  # as the worker (BILLING_WORKER_FETCH_WAIT_MS)
    )
    await consumer.start()
    poll_ms = min(fetch_wait_ms, POLL_TIMEOUT_MS)  # as the worker's subscriber polls
    try:
        seen = 0
        while seen < expect:
            fetched = await consumer.getmany(timeout_ms=poll_ms, max_records=batch)
            records = [r for part in fetched.values() for r in part]
            if not records:
                continue
            # As the worker's lanes: one transaction per group of keys, run concurrently.
            by_key: list[list[Record]] = [[] for _ in conns]
            for record in records:
                by_key[hash(record.key) % lanes].append(record)
            async with asyncio.TaskGroup() as running:
                for conn, part in zip(conns, by_key, strict=True):
                    if part:
                        running.create_task(apply(conn, group, part))
            await consumer.commit(
                {
                    TopicPartition(BILLING_EVENTS, tp.partition): part[-1].offset + 1
                    for tp, part in fetched.items()
                }
            )
            seen += len(records)
    finally:
        await consumer.stop()
        for conn in conns:
            await conn.close()


def main(prepare: Prepare, argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:8] if argv is None else argv
    bootstrap, database_url, group, batch, expect, fetch_wait_ms, lanes = args
    freeze_startup(BATCH_YOUNG_THRESHOLD)  # the worker's GC settings: a process, not a framework
    with ShutdownSignals() as signals:
        signals.run(
            consume(
                prepare,
                bootstrap,
                database_url,
                group,
                int(batch),
                int(expect),
                int(fetch_wait_ms),
                int(lanes),
            )
        )
    return 0
