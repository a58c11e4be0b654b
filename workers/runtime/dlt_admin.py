"""Operator tools for dead-letter topics: list, show, replay (``billing-fleet dlt``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker

from billing_fleet.kafka_admin import read_all
from workers.runtime.dead_letters import DLT_PREFIX
from workers.runtime.metrics import DLT_REPLAYS

DLT_SUFFIX = ".dlt"


@dataclass
class TopicSummary:
    topic: str
    messages: int = 0
    replayed: int = 0
    by_error_class: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str:
        return next((v.decode(errors="replace") for n, v in self.headers if n == name), "")


async def read_records(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every record of ``topic`` now, by partition and offset."""
    return [
        DeadLetter(r.topic, r.partition, r.offset, r.key, r.value or b"", list(r.headers))
        for r in await read_all(bootstrap, topic)
    ]


async def dead_letter_topics(bootstrap: str, worker: str | None = None) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        topics: set[str] = await consumer.topics()
    finally:
        await consumer.stop()
    wanted = f".{worker}{DLT_SUFFIX}" if worker else DLT_SUFFIX
    return sorted(t for t in topics if t.endswith(wanted))


async def list_dead_letters(
    bootstrap: str, database_url: str | None, worker: str | None = None
) -> list[TopicSummary]:
    """Per dead-letter topic: messages, how many were replayed, counts by error class."""
    summaries = []
    replayed = await _replayed(database_url)
    for topic in await dead_letter_topics(bootstrap, worker):
        summary = TopicSummary(topic)
        for letter in await read_records(bootstrap, topic):
            summary.messages += 1
            summary.by_error_class[letter.header("dlt_error_class") or "unknown"] += 1
            summary.replayed += (topic, letter.partition, letter.offset) in replayed
        summaries.append(summary)
    return summaries


async def show_dead_letter(bootstrap: str, topic: str, partition: int, offset: int) -> DeadLetter:
    for letter in await read_records(bootstrap, topic):
        if (letter.partition, letter.offset) == (partition, offset):
            return letter
    raise LookupError(f"no message at {topic} partition {partition} offset {offset}")


async def replay_dead_letters(
    bootstrap: str,
    database_url: str,
    topic: str,
    *,
    offsets: Iterable[tuple[int, int]] = (),
    replay_all: bool = False,
    on_selected: Callable[[int], None] = lambda total: None,
    on_replayed: Callable[[DeadLetter], None] = lambda letter: None,
) -> list[DeadLetter]:
    """Re-publish the chosen dead letters to their origin topic (original value, key and
    non-``dlt_`` headers), each acknowledged by the broker, and record the replay.

    ``replay_all`` takes every message not replayed before; explicit ``offsets`` (partition,
    offset) are replayed even if they were. A second replay is harmless anyway: the worker
    finds the event in processed_events if it was applied.
    """
    wanted = set(offsets)
    letters = await read_records(bootstrap, topic)
    replayed = await _replayed(database_url)
    chosen = [
        letter
        for letter in letters
        if (letter.partition, letter.offset) in wanted
        or (replay_all and (topic, letter.partition, letter.offset) not in replayed)
    ]
    missing = wanted - {(letter.partition, letter.offset) for letter in letters}
    if missing:
        raise LookupError(f"not in {topic}: " + ", ".join(f"{p}:{o}" for p, o in sorted(missing)))
    on_selected(len(chosen))
    broker = KafkaBroker(bootstrap, acks="all", client_id="billing-fleet-dlt-replay", logger=None)
    await broker.connect()
    conn = await asyncpg.connect(database_url)
    try:
        for letter in chosen:
            await _replay_one(broker, conn, letter)
            on_replayed(letter)
    finally:
        await conn.close()
        await broker.stop()
    return chosen


async def _replay_one(broker: KafkaBroker, conn: asyncpg.Connection, letter: DeadLetter) -> None:
    origin = letter.header("dlt_origin_topic")
    if not origin:
        raise ValueError(f"{letter.topic} {letter.partition}:{letter.offset} has no origin topic")
    headers = {
        name: value.decode(errors="replace")
        for name, value in letter.headers
        if not name.startswith(DLT_PREFIX)
    }
    await broker.publish(letter.value, origin, key=letter.key, headers=headers)
    group = letter.header("dlt_consumer_group")
    await conn.execute(
        """
        INSERT INTO dlt_replays (topic, partition, "offset", origin_topic, consumer_group)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (topic, partition, "offset")
        DO UPDATE SET replays = dlt_replays.replays + 1, last_replayed_at = now()
        """,
        letter.topic,
        letter.partition,
        letter.offset,
        origin,
        group,
    )
    DLT_REPLAYS.labels(group).inc()


async def _replayed(database_url: str | None) -> set[tuple[str, int, int]]:
    if not database_url:
        return set()
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch('SELECT topic, partition, "offset" FROM dlt_replays')
    finally:
        await conn.close()
    return {(row["topic"], row["partition"], row["offset"]) for row in rows}


def parse_offsets(values: Sequence[str]) -> list[tuple[int, int]]:
    """``["0:12", "3:7"]`` → ``[(0, 12), (3, 7)]``."""
    parsed = []
    for value in values:
        partition, sep, offset = value.partition(":")
        if not sep:
            raise ValueError(f"{value!r}: expected PARTITION:OFFSET")
        parsed.append((int(partition), int(offset)))
    return parsed


def run(coro: Any) -> Any:
    return asyncio.run(coro)
