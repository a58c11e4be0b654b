"""Transactional outbox: rows written with the state change, relayed to Kafka afterwards.

Every row names the worker that wrote it, and each worker's relay takes only its own
rows, under its own advisory lock (``relay_lock_key``): one relay at a time per worker
across its replicas (it publishes in id order, which keeps per-key order), and different
workers relay in parallel. The relay deletes a batch of rows and publishes them in one
transaction, committed only after the broker acknowledged every row. Delivery is at
least once: a relay that crashes after the acks but before the commit publishes those
rows again after the restart. Consumers key by event id (``ce_id``), so the repeat
changes nothing for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import asyncpg
from pydantic_core import from_json

from billing_fleet.db import bounded_transaction, json_text
from workers.runtime.failures import back_off
from workers.runtime.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED
from workers.runtime.relay_sender import KafkaRecord
from workers.runtime.spec import Outgoing

log = logging.getLogger(__name__)

# The one relay lock of releases before migration 0005 ("outbox"): a relay of those
# takes it exclusively and relays every row. Relays of this release hold it shared, so
# they run together but never while an old one relays (a rolling upgrade keeps order).
LEGACY_RELAY_LOCK_KEY: Final = 0x6F7574626F78
RELAY_BATCH_ROWS: Final = 500
BACKLOG_COUNT_SECONDS: Final = 1.0
"""Least time between two counts of a backlog: ``count(*)`` visits every row (and the dead
ones the relay's deletes leave until vacuum), which cost more than the relaying itself."""

SendAll = Callable[[Sequence[KafkaRecord]], Awaitable[None]]
"""Publish rows, keeping their order per partition; returns once the broker acked all."""


def relay_lock_key(worker: str) -> int:
    """The advisory lock of ``worker``'s relay: the first 8 bytes of
    ``sha256("billing-fleet outbox relay:" + worker)`` as a signed 64-bit integer (the
    type of PostgreSQL's advisory lock keys); stable across releases and hosts."""
    digest = hashlib.sha256(f"billing-fleet outbox relay:{worker}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def write_outbox(conn: asyncpg.Connection, worker: str, outgoing: Sequence[Outgoing]) -> None:
    """Insert ``outgoing`` as ``worker``'s rows in the caller's transaction, in order (ids
    follow the list)."""
    if outgoing:
        await conn.execute(
            "INSERT INTO outbox (worker, topic, key, value, headers)"
            " SELECT $1, t, k, v, h::jsonb FROM unnest($2::text[], $3::bytea[], $4::bytea[],"
            " $5::text[]) WITH ORDINALITY AS o(t, k, v, h, n) ORDER BY n",
            worker,
            [o.topic for o in outgoing],
            [o.key.encode() for o in outgoing],
            [o.value for o in outgoing],
            [json_text(o.headers) for o in outgoing],
        )


class OutboxRelay:
    """Publishes ``worker``'s rows in id order and deletes them once acknowledged; woken
    by ``wake()``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        send_all: SendAll,
        *,
        worker: str,
        ack_timeout: float,
        db_timeout: float,
        poll_interval: float = 1.0,
        backoff_max: float = 30.0,
        is_outage: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._pool, self._send_all, self._worker = pool, send_all, worker
        self._lock_key = relay_lock_key(worker)
        self._is_outage = is_outage
        self._ack_timeout, self._poll, self._backoff_max = ack_timeout, poll_interval, backoff_max
        self._db_timeout = db_timeout
        self._wake = asyncio.Event()
        self._counted_at = -BACKLOG_COUNT_SECONDS

    def wake(self) -> None:
        """Called after a transaction that wrote outbox rows committed."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled; outages are retried with backoff, never raised."""
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
            except Exception as exc:
                await back_off(
                    "outbox relay",
                    exc,
                    failures,
                    self._backoff_max,
                    worker=self._worker,
                    is_outage=self._is_outage,
                )
                failures += 1

    async def flush(self) -> int:
        """Publish everything unpublished now; returns how many rows this call published."""
        total = 0
        while True:
            count = await self.flush_once()
            total += count
            if count < RELAY_BATCH_ROWS:  # a short batch was all there was
                return total

    async def flush_once(self) -> int:
        """Publish and delete up to one batch of rows; 0 when none is left or another relay
        holds the lock.

        The transaction spans the broker's acks: its database steps (connection, lock and
        take; count and commit) get the database timeout each, the send the ack timeout,
        on one deadline moved between them. On the deadline the connection is abandoned
        and the server rolls the delete back."""
        loop = asyncio.get_running_loop()
        ceiling = 2 * self._db_timeout + self._ack_timeout
        async with (
            asyncio.timeout(self._db_timeout) as deadline,
            bounded_transaction(self._pool, ceiling) as conn,
        ):
            if not await conn.fetchval(_LOCK, LEGACY_RELAY_LOCK_KEY, self._lock_key):
                return 0
            # Deleted in the same transaction: the delete commits only after every ack
            # (acks=all); a failed send rolls it back and the rows stay.
            taken = await conn.fetch(_TAKE, self._worker, RELAY_BATCH_ROWS)
            rows = [_record(row) for row in taken]
            if rows:
                deadline.reschedule(loop.time() + self._ack_timeout)
                await self._send_all(rows)
                deadline.reschedule(loop.time() + self._db_timeout)
                OUTBOX_PUBLISHED.labels(self._worker).inc(len(rows))
            # A short batch took every row there was; a full one leaves a backlog to count.
            if len(rows) < RELAY_BATCH_ROWS:
                OUTBOX_BACKLOG.labels(self._worker).set(0)
            elif (now := time.monotonic()) - self._counted_at >= BACKLOG_COUNT_SECONDS:
                self._counted_at = now
                backlog = await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE worker = $1", self._worker
                )
                OUTBOX_BACKLOG.labels(self._worker).set(backlog)
            return len(rows)


# Both locks are transaction-level: whatever one of them got is released at the commit.
_LOCK = "SELECT pg_try_advisory_xact_lock_shared($1) AND pg_try_advisory_xact_lock($2)"

_TAKE = """
WITH taken AS (
    DELETE FROM outbox
    WHERE id IN (SELECT id FROM outbox WHERE worker = $1 ORDER BY id LIMIT $2)
    RETURNING id, topic, key, value, headers::text
)
SELECT topic, key, value, headers FROM taken ORDER BY id
"""


def _record(row: asyncpg.Record) -> KafkaRecord:
    topic, key, value, headers = row
    text: dict[str, str] = from_json(headers)
    return KafkaRecord(topic, key or b"", value, [(n, v.encode()) for n, v in text.items()])
