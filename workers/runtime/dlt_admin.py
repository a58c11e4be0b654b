"""Operator tools for dead-letter topics: list, show, replay (``billing-fleet dlt``).

A dead letter is named by its id (the ``dlt_id`` header) or, if it was written before
letters had ids, by ``PARTITION:OFFSET``; ``dlt_replays`` records replays the same way.
Positions alone are not enough: a broker that starts again empty (dev's in-memory one)
puts new letters at offsets that older, replayed ones had.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker

from billing_fleet.kafka_admin import connect_when_reachable, read_all
from billing_fleet.kafka_security import PLAINTEXT, KafkaSecurity, servers
from contracts import dead_letter_topic
from contracts.labels import bounded_label
from workers.runtime.dead_letters import DLT_ID, DLT_PREFIX
from workers.runtime.metrics import DLT_REPLAYS

DLT_SUFFIX = ".dlt"
CONNECT_TIMEOUT_SECONDS = 5.0


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

    @property
    def letter_id(self) -> str:
        """Its ``dlt_id``; empty for a letter written before dead letters had ids."""
        return self.header(DLT_ID)

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def ref(self) -> str:
        """What names it to ``dlt show`` and ``dlt replay``: its id, else its position."""
        return self.letter_id or self.position


@dataclass(frozen=True)
class LetterStatus:
    letter: DeadLetter
    replayed: bool


@dataclass
class TopicSummary:
    topic: str
    messages: int = 0
    replayed: int = 0
    by_error_class: Counter[str] = field(default_factory=Counter)
    letters: list[LetterStatus] = field(default_factory=list)


@dataclass
class Replays:
    """What ``dlt_replays`` holds: letters by (topic, id), letters without an id by
    (topic, partition, offset)."""

    ids: set[tuple[str, str]] = field(default_factory=set)
    positions: set[tuple[str, int, int]] = field(default_factory=set)

    def __contains__(self, letter: DeadLetter) -> bool:
        if letter.letter_id:
            return (letter.topic, letter.letter_id) in self.ids
        return (letter.topic, letter.partition, letter.offset) in self.positions


async def read_records(
    bootstrap: str, topic: str, security: KafkaSecurity = PLAINTEXT
) -> list[DeadLetter]:
    """Every record of ``topic`` now, by partition and offset."""
    return [
        DeadLetter(r.topic, r.partition, r.offset, r.key, r.value or b"", list(r.headers))
        for r in await read_all(bootstrap, topic, security)
    ]


async def dead_letter_topics(
    bootstrap: str, worker: str | None = None, security: KafkaSecurity = PLAINTEXT
) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **security.client_kwargs())
    try:
        await consumer.start()  # inside: a consumer that failed to start is closed too
        topics: set[str] = await consumer.topics()
    finally:
        await consumer.stop()
    wanted = f".{worker}{DLT_SUFFIX}" if worker else DLT_SUFFIX
    return sorted(t for t in topics if t.endswith(wanted))


async def list_dead_letters(
    bootstrap: str,
    database_url: str | None,
    worker: str | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> list[TopicSummary]:
    """Per dead-letter topic: messages, how many were replayed, counts by error class,
    and each letter with whether it was replayed."""
    summaries = []
    replayed = await _replayed(database_url)
    for topic in await dead_letter_topics(bootstrap, worker, security):
        summary = TopicSummary(topic)
        for letter in await read_records(bootstrap, topic, security):
            status = LetterStatus(letter, letter in replayed)
            summary.messages += 1
            summary.by_error_class[letter.header("dlt_error_class") or "unknown"] += 1
            summary.replayed += status.replayed
            summary.letters.append(status)
        summaries.append(summary)
    return summaries


async def show_dead_letter(
    bootstrap: str, topic: str, ref: str, security: KafkaSecurity = PLAINTEXT
) -> DeadLetter:
    """The dead letter named by ``ref``: its id, or ``PARTITION:OFFSET``."""
    letters = await read_records(bootstrap, topic, security)
    for letter in letters:
        if ref in (letter.letter_id, letter.position):
            return letter
    raise LookupError(f"no dead letter {ref} in {topic}")


async def replay_dead_letters(
    bootstrap: str,
    database_url: str,
    topic: str,
    *,
    offsets: Iterable[tuple[int, int]] = (),
    ids: Iterable[str] = (),
    replay_all: bool = False,
    on_selected: Callable[[int], None] = lambda total: None,
    on_replayed: Callable[[DeadLetter], None] = lambda letter: None,
    security: KafkaSecurity = PLAINTEXT,
) -> list[DeadLetter]:
    """Re-publish the chosen dead letters to their origin topic (original value, key and
    non-``dlt_`` headers), each acknowledged by the broker, and record the replay.

    ``replay_all`` takes every letter not replayed before; explicit ``ids`` and ``offsets``
    (partition, offset) are replayed even if they were. A second replay is harmless
    anyway: the worker finds the event in processed_events if it was applied. Copies of
    one letter (an unacknowledged dead-letter publish that was retried) are one letter.
    """
    wanted_offsets, wanted_ids = set(offsets), {i for i in ids if i}
    letters = await read_records(bootstrap, topic, security)
    replayed = await _replayed(database_url)
    chosen: list[DeadLetter] = []
    seen_ids: set[str] = set()
    for letter in letters:
        if letter.letter_id in seen_ids:
            continue  # a copy of a letter already chosen
        if (
            (letter.partition, letter.offset) in wanted_offsets
            or letter.letter_id in wanted_ids
            or (replay_all and letter not in replayed)
        ):
            chosen.append(letter)
            if letter.letter_id:
                seen_ids.add(letter.letter_id)
    missing = [
        f"{p}:{o}" for p, o in sorted(wanted_offsets - {(x.partition, x.offset) for x in letters})
    ]
    missing += sorted(wanted_ids - {letter.letter_id for letter in letters})
    if missing:
        raise LookupError(f"not in {topic}: " + ", ".join(missing))
    on_selected(len(chosen))
    broker = KafkaBroker(
        servers(bootstrap),
        acks="all",
        client_id="billing-fleet-dlt-replay",
        logger=None,
        security=security.broker_security(),
    )
    # Stops what it started when it fails: no producer is left unclosed.
    await connect_when_reachable(broker, bootstrap, CONNECT_TIMEOUT_SECONDS, security=security)
    try:
        conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            for letter in chosen:
                await _replay_one(broker, conn, letter)
                on_replayed(letter)
        finally:
            await conn.close()
    finally:
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
        _RECORD_BY_ID if letter.letter_id else _RECORD_BY_POSITION,
        letter.topic,
        letter.partition,
        letter.offset,
        origin,
        group,
        *([letter.letter_id] if letter.letter_id else []),
    )
    # The group comes from a header: a label only if the letter's topic names it.
    known = {group} if letter.topic == dead_letter_topic(origin, group) else set()
    DLT_REPLAYS.labels(bounded_label(group, known)).inc()


_RECORD_BY_ID = """
    INSERT INTO dlt_replays (topic, partition, "offset", origin_topic, consumer_group, dlt_id)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (topic, dlt_id) WHERE dlt_id IS NOT NULL
    DO UPDATE SET replays = dlt_replays.replays + 1, last_replayed_at = now(),
        partition = EXCLUDED.partition, "offset" = EXCLUDED."offset"
"""
# A letter written before dead letters had ids.
_RECORD_BY_POSITION = """
    INSERT INTO dlt_replays (topic, partition, "offset", origin_topic, consumer_group)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (topic, partition, "offset") WHERE dlt_id IS NULL
    DO UPDATE SET replays = dlt_replays.replays + 1, last_replayed_at = now()
"""


async def _replayed(database_url: str | None) -> Replays:
    replays = Replays()
    if not database_url:
        return replays
    conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        rows = await conn.fetch('SELECT topic, partition, "offset", dlt_id FROM dlt_replays')
    finally:
        await conn.close()
    for row in rows:
        if row["dlt_id"] is not None:
            replays.ids.add((row["topic"], row["dlt_id"]))
        else:
            replays.positions.add((row["topic"], row["partition"], row["offset"]))
    return replays


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
