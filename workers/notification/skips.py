"""Notices that cannot be sent: recorded with their reason and counted, never poison.

An event whose customer has no address yet is not an error of the event: dead-lettering
it would hold nothing back that a retry could fix, and a replay after the address came
would send a stale notice. So the notice is written to ``notification_skips`` (once per
notice, event and recipient) and counted in ``billing_notifications_skipped_total``.
"""

from __future__ import annotations

import logging

import asyncpg

from workers.notification.metrics import NOTIFICATIONS_SKIPPED
from workers.notification.rules import Notice, Skip

log = logging.getLogger(__name__)


async def record_skip(conn: asyncpg.Connection, topic: str, notice: Notice, skip: Skip) -> None:
    inserted = await conn.fetchval(
        "INSERT INTO notification_skips (notice, event_id, topic, recipient, reason)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
        notice.kind,
        notice.event_id,
        topic,
        skip.recipient,
        skip.reason,
    )
    if inserted is None:  # this event was judged before (a replay): counted then
        return
    NOTIFICATIONS_SKIPPED.labels(notice.kind, skip.reason).inc()
    log.info(
        "notice not sent",
        extra={
            "notice": notice.kind,
            "reason": skip.reason,
            "customer_id": skip.recipient or None,
            "event_id": notice.event_id,
        },
    )
