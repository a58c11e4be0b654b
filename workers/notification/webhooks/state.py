"""The ``webhook_endpoints`` table: an endpoint disabled by a 410, its last success and
failure; and what its deliveries (rows of the ``webhook`` channel) came to.

Each function is one short transaction of its own on the caller's connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from workers.notification.webhooks.payload import ENDPOINT_KEY
from workers.runtime.deliveries.model import DETAIL_CHARS
from workers.runtime.deliveries.store import clean_text

DISABLED_CODE: Final = "disabled"
"""``deliveries.last_code`` of a row stopped because its endpoint is disabled."""


@dataclass(frozen=True, slots=True)
class Health:
    """The newest outcomes one sender saw for an endpoint since it last wrote them."""

    endpoint_id: str
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointState:
    endpoint_id: str
    disabled_at: datetime | None
    disabled_reason: str | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure: str | None


class NotDisabled(LookupError):
    """``enable`` of an endpoint that is not disabled."""


async def disable(
    conn: asyncpg.Connection,
    endpoint_id: str,
    reason: str,
    *,
    worker: str,
    channel: str,
    answered: str,
) -> int:
    """Disable the endpoint (the first time counts: ``disabled_at`` is kept) and stop its
    pending deliveries: failed, ``last_code`` ``disabled``; all but ``answered`` (the key
    of the row whose 410 this is: the dispatcher records its own result). Returns how
    many it stopped."""
    reason = clean_text(reason, DETAIL_CHARS) or ""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_endpoints AS w (endpoint_id, disabled_at, disabled_reason)"
            " VALUES ($1, now(), $2) ON CONFLICT (endpoint_id) DO UPDATE SET"
            " disabled_at = coalesce(w.disabled_at, now()),"
            " disabled_reason = coalesce(w.disabled_reason, excluded.disabled_reason),"
            " updated_at = now()",
            endpoint_id,
            reason,
        )
        stopped = await conn.fetchval(
            "WITH stopped AS (UPDATE deliveries SET status = 'failed', last_code = $4,"
            " last_detail = $5, updated_at = now()"
            " WHERE worker = $1 AND channel = $2 AND status = 'pending'"
            f" AND metadata->>'{ENDPOINT_KEY}' = $3 AND idempotency_key <> $6 RETURNING 1)"
            " SELECT count(*) FROM stopped",
            worker,
            channel,
            endpoint_id,
            DISABLED_CODE,
            clean_text(f"endpoint {endpoint_id} disabled: {reason}", DETAIL_CHARS),
            answered,
        )
    return int(stopped)


async def is_disabled(conn: asyncpg.Connection, endpoint_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT disabled_at IS NOT NULL FROM webhook_endpoints WHERE endpoint_id = $1",
        endpoint_id,
    )
    return bool(found)


async def disabled_ids(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT endpoint_id FROM webhook_endpoints WHERE disabled_at IS NOT NULL"
    )
    return {row[0] for row in rows}


async def record_health(conn: asyncpg.Connection, health: Sequence[Health]) -> None:
    """Write the newest outcomes, many endpoints per statement; an older one (another
    replica wrote a newer) leaves the row as it is."""
    if not health:
        return
    await conn.execute(
        "INSERT INTO webhook_endpoints AS w"
        " (endpoint_id, last_success_at, last_failure_at, last_failure)"
        " SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[])"
        " ON CONFLICT (endpoint_id) DO UPDATE SET"
        " last_success_at = greatest(w.last_success_at, excluded.last_success_at),"
        " last_failure = CASE WHEN excluded.last_failure_at"
        "   >= coalesce(w.last_failure_at, '-infinity') THEN excluded.last_failure"
        "   ELSE w.last_failure END,"
        " last_failure_at = greatest(w.last_failure_at, excluded.last_failure_at),"
        " updated_at = now()",
        [h.endpoint_id for h in health],
        [h.last_success_at for h in health],
        [h.last_failure_at for h in health],
        [clean_text(h.last_failure, DETAIL_CHARS) for h in health],
    )


async def enable(conn: asyncpg.Connection, endpoint_id: str, *, channel: str) -> int:
    """Clear the endpoint's disable and re-queue its deliveries that failed since (the
    stopped ones, the 410 itself): pending, due now, with the channel's attempts all over
    again, as ``deliveries retry`` does. Returns how many; ``NotDisabled`` if it was not."""
    async with conn.transaction():
        disabled_at = await conn.fetchval(
            "SELECT disabled_at FROM webhook_endpoints WHERE endpoint_id = $1 FOR UPDATE",
            endpoint_id,
        )
        if disabled_at is None:
            raise NotDisabled(f"endpoint {endpoint_id} is not disabled")
        await conn.execute(
            "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL,"
            " updated_at = now() WHERE endpoint_id = $1",
            endpoint_id,
        )
        requeued = await conn.fetchval(
            "WITH requeued AS (UPDATE deliveries SET status = 'pending',"
            " attempts_at_requeue = attempts, next_attempt_at = now(), updated_at = now()"
            f" WHERE channel = $1 AND metadata->>'{ENDPOINT_KEY}' = $2 AND status = 'failed'"
            " AND updated_at >= $3 RETURNING 1) SELECT count(*) FROM requeued",
            channel,
            endpoint_id,
            disabled_at,
        )
    return int(requeued)


async def endpoint_states(conn: asyncpg.Connection) -> dict[str, EndpointState]:
    rows = await conn.fetch(
        "SELECT endpoint_id, disabled_at, disabled_reason, last_success_at, last_failure_at,"
        " last_failure FROM webhook_endpoints"
    )
    return {row[0]: EndpointState(*row) for row in rows}


async def delivery_counts(conn: asyncpg.Connection, channel: str) -> dict[str, dict[str, int]]:
    """Per endpoint, its deliveries by status (those not sent: pending, failed, dead)."""
    rows = await conn.fetch(
        f"SELECT metadata->>'{ENDPOINT_KEY}', status, count(*) FROM deliveries"
        " WHERE channel = $1 AND status <> 'sent' GROUP BY 1, 2",
        channel,
    )
    counts: dict[str, dict[str, int]] = {}
    for endpoint_id, status, count in rows:
        if endpoint_id is not None:
            counts.setdefault(endpoint_id, {})[status] = count
    return counts
