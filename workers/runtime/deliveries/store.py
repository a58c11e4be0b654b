"""The ``deliveries`` and ``delivery_attempts`` tables: write, claim, record, list, retry.

Every statement here is one short transaction of its own, except ``write_deliveries``,
which runs in the handler's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg
from pydantic_core import from_json

from billing_fleet.db import json_text
from workers.runtime.deliveries.model import DETAIL_CHARS, Delivery, SendResult, Status

CODE_CHARS: Final = 32
"""Longest status or reply code kept per attempt."""


async def write_deliveries(
    conn: asyncpg.Connection, worker: str, deliveries: Sequence[Delivery]
) -> int:
    """Insert ``deliveries`` in the caller's transaction; a (worker, channel, key) already
    there is left alone. Returns how many rows are new."""
    if not deliveries:
        return 0
    rows = await conn.fetch(
        "INSERT INTO deliveries (worker, channel, destination, idempotency_key, payload,"
        " headers, metadata)"
        " SELECT $1, c, d, k, p, h::jsonb, m::jsonb"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[])"
        " AS u(c, d, k, p, h, m)"
        " ON CONFLICT (worker, channel, idempotency_key) DO NOTHING RETURNING id",
        worker,
        [d.channel for d in deliveries],
        [d.destination for d in deliveries],
        [d.idempotency_key for d in deliveries],
        [d.payload for d in deliveries],
        [json_text(dict(d.headers)) for d in deliveries],
        [json_text(dict(d.metadata)) for d in deliveries],
    )
    return len(rows)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row leased to this dispatcher: ``attempt`` is this attempt's number (1-based,
    never reused), ``tries`` its number since the row was last re-queued (what the
    channel's max attempts count), ``origin`` the destination as send slots count it (a
    URL's scheme, host and port; anything else as written)."""

    id: int
    attempt: int
    delivery: Delivery
    origin: str
    tries: int


_CLAIM = """
WITH due AS (
    SELECT id FROM deliveries
    WHERE worker = $1 AND status = 'pending' AND next_attempt_at <= now()
      AND channel = ANY($2::text[]) AND origin <> ALL($5::text[])
    ORDER BY next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $4)
FROM due WHERE d.id = due.id
RETURNING d.id, d.attempts, d.channel, d.destination, d.idempotency_key, d.payload,
          d.headers::text, d.metadata::text, d.origin, d.attempts - d.attempts_at_requeue
"""


async def claim(
    conn: asyncpg.Connection,
    worker: str,
    channels: Sequence[str],
    limit: int,
    lease: float,
    skip_origins: Sequence[str] = (),
) -> list[Claimed]:
    """Lease up to ``limit`` due rows for ``lease`` seconds (one statement, one short
    transaction): rows another dispatcher holds, or to one of ``skip_origins`` (their send
    slots are full), are skipped; a lease that expires (its sender crashed) makes the row
    due again."""
    rows = await conn.fetch(_CLAIM, worker, list(channels), limit, lease, list(skip_origins))
    return [
        Claimed(
            row[0],
            row[1],
            Delivery(row[2], row[3], row[4], row[5], from_json(row[6]), from_json(row[7])),
            row[8],
            row[9],
        )
        for row in rows
    ]


async def release(
    conn: asyncpg.Connection, rows: Sequence[Claimed], wait_seconds: float = 0.0
) -> None:
    """Give back claimed rows that were not sent (their destination's slots are full, or
    it is out): due again after ``wait_seconds``, the attempt not counted; a lease lost
    meanwhile is left alone."""
    if not rows:
        return
    await conn.execute(
        "UPDATE deliveries AS d SET attempts = d.attempts - 1,"
        " next_attempt_at = now() + make_interval(secs => $3)"
        " FROM unnest($1::bigint[], $2::int[]) AS r(id, attempt)"
        " WHERE d.id = r.id AND d.attempts = r.attempt AND d.status = 'pending'",
        [row.id for row in rows],
        [row.attempt for row in rows],
        wait_seconds,
    )


async def push_back(
    conn: asyncpg.Connection, worker: str, waits: Mapping[tuple[str, str], float]
) -> None:
    """Make the due, unleased pending rows of each (channel, origin) wait as long as the
    retry just recorded for it: its outage holds back its own rows only, not everyone's
    send slots."""
    if not waits:
        return
    await conn.execute(
        "UPDATE deliveries AS d"
        " SET next_attempt_at = greatest(d.next_attempt_at, now() + make_interval(secs => w.wait))"
        " FROM unnest($2::text[], $3::text[], $4::float8[]) AS w(channel, origin, wait)"
        " WHERE d.worker = $1 AND d.status = 'pending' AND d.channel = w.channel"
        " AND d.origin = w.origin AND d.next_attempt_at <= now()",
        worker,
        [channel for channel, _ in waits],
        [origin for _, origin in waits],
        list(waits.values()),
    )


async def push_back_channels(
    conn: asyncpg.Connection, worker: str, waits: Mapping[str, float]
) -> None:
    """Make the due, unleased pending rows of each channel wait as long as the retry just
    recorded for its server: channels whose every send goes through one server (an SMTP
    relay), so that server's outage holds back all their rows, whatever the recipient."""
    if not waits:
        return
    await conn.execute(
        "UPDATE deliveries AS d"
        " SET next_attempt_at = greatest(d.next_attempt_at, now() + make_interval(secs => w.wait))"
        " FROM unnest($2::text[], $3::float8[]) AS w(channel, wait)"
        " WHERE d.worker = $1 AND d.status = 'pending' AND d.channel = w.channel"
        " AND d.next_attempt_at <= now()",
        worker,
        list(waits),
        list(waits.values()),
    )


@dataclass(frozen=True, slots=True)
class Attempted:
    """One attempt's result and the row's next state (``retry_in``: when pending)."""

    claimed: Claimed
    started_at: datetime
    result: SendResult
    status: Status
    retry_in: float


_RECORD = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::float8[])
        AS r(id, attempt, started_at, outcome, code, detail, status, retry_in)
), attempt AS (
    INSERT INTO delivery_attempts (delivery_id, attempt, started_at, outcome, code, detail)
    SELECT id, attempt, started_at, outcome, code, detail FROM r
)
UPDATE deliveries AS d
SET status = r.status, next_attempt_at = now() + make_interval(secs => r.retry_in),
    last_code = r.code, last_detail = r.detail, updated_at = now(),
    sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END
FROM r WHERE d.id = r.id AND d.attempts = r.attempt AND d.status = 'pending'
"""


def clean_text(value: str | None, limit: int) -> str | None:
    """``value`` as a text column holds it: no NUL (PostgreSQL refuses one), at most
    ``limit`` characters."""
    if value is None:
        return None
    return value.replace("\x00", "")[:limit]


async def record(conn: asyncpg.Connection, attempts: Sequence[Attempted]) -> None:
    """Record attempts and their rows' new status, in one statement.

    A row changes only while it is still that attempt's (a lease that expired and was
    claimed again belongs to the newer attempt); the attempt is recorded either way. A
    code or detail (the receiver's text) loses NULs and is cut to its length."""
    if not attempts:
        return
    await conn.execute(
        _RECORD,
        [a.claimed.id for a in attempts],
        [a.claimed.attempt for a in attempts],
        [a.started_at for a in attempts],
        [a.result.outcome for a in attempts],
        [clean_text(a.result.code, CODE_CHARS) for a in attempts],
        [clean_text(a.result.detail, DETAIL_CHARS) for a in attempts],
        [a.status for a in attempts],
        [a.retry_in for a in attempts],
    )


async def pending_counts(conn: asyncpg.Connection, worker: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT channel, count(*) FROM deliveries WHERE worker = $1 AND status = 'pending'"
        " GROUP BY channel",
        worker,
    )
    return {row[0]: row[1] for row in rows}


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    worker: str
    channel: str
    destination: str
    idempotency_key: str
    status: Status
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_code: str | None
    last_detail: str | None


async def list_deliveries(
    conn: asyncpg.Connection, *, worker: str | None, status: Status | None, limit: int
) -> list[DeliveryRow]:
    """The newest ``limit`` rows, filtered by worker and status when given."""
    rows = await conn.fetch(
        "SELECT id, worker, channel, destination, idempotency_key, status, attempts,"
        " next_attempt_at, created_at, last_code, last_detail FROM deliveries"
        " WHERE ($1::text IS NULL OR worker = $1) AND ($2::text IS NULL OR status = $2)"
        " ORDER BY id DESC LIMIT $3",
        worker,
        status,
        limit,
    )
    return [DeliveryRow(*row) for row in rows]


class NotRetryable(LookupError):
    """No such delivery, or it is not dead or failed."""


async def requeue(conn: asyncpg.Connection, delivery_id: int) -> str:
    """Put a dead or failed row back to pending, due now, with its channel's attempts
    all over again (the attempt numbers go on from the last one); returns its worker.
    ``NotRetryable`` says why not."""
    worker = await conn.fetchval(
        "UPDATE deliveries SET status = 'pending', attempts_at_requeue = attempts,"
        " next_attempt_at = now(), updated_at = now()"
        " WHERE id = $1 AND status IN ('dead', 'failed') RETURNING worker",
        delivery_id,
    )
    if worker is not None:
        return str(worker)
    status = await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", delivery_id)
    if status is None:
        raise NotRetryable(f"no delivery {delivery_id}")
    raise NotRetryable(
        f"delivery {delivery_id} is {status}: only dead or failed deliveries are re-queued"
    )
