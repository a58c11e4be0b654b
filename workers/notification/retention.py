"""Retention: this worker's sent mails lose their address and body after
``notification_retention_days``.

The runtime's ``deliveries`` table is shared by every worker, and its rows stay after they
are sent, as the record. This job touches only this worker's ``email`` rows: each one sent
longer ago than the retention keeps its key, status, times and attempts, but its
destination becomes its masked form (``j***@e***.com``), its payload (the whole message)
becomes empty, and error texts of its attempts that may quote the address are cleared.
A masked row has an empty payload, so it is not taken again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from billing_fleet.masking import mask_email
from workers.notification.notices import EMAIL_CHANNEL
from workers.runtime.spec import Effect

BATCH: Final = 1000
"""Rows masked per run (the periodic job runs every ``INTERVAL_SECONDS``)."""
INTERVAL_SECONDS: Final = 60.0

_DUE = """
SELECT id, destination FROM deliveries
WHERE worker = $1 AND channel = $2 AND status = 'sent' AND octet_length(payload) > 0
  AND sent_at < now() - make_interval(secs => $3)
ORDER BY sent_at
LIMIT $4
FOR UPDATE SKIP LOCKED
"""

_MASK = """
WITH masked AS (
    UPDATE deliveries AS d
    SET destination = m.destination, payload = ''::bytea, updated_at = now(),
        last_detail = CASE WHEN d.last_detail LIKE '%@%' THEN NULL ELSE d.last_detail END
    FROM unnest($1::bigint[], $2::text[]) AS m(id, destination)
    WHERE d.id = m.id
    RETURNING d.id
)
UPDATE delivery_attempts AS a SET detail = NULL
FROM masked WHERE a.delivery_id = masked.id AND a.detail LIKE '%@%'
"""


class Retention:
    """The periodic job (``WorkerSpec.periodic``) of worker ``worker``."""

    def __init__(self, worker: str, retention_days: float, batch: int = BATCH) -> None:
        self.worker = worker
        self.retention_seconds = retention_days * 86400.0
        self.batch = batch

    async def __call__(self, conn: asyncpg.Connection) -> Sequence[Effect]:
        await self.mask(conn)
        return []

    async def mask(self, conn: asyncpg.Connection) -> int:
        """Mask up to ``batch`` due rows in the open transaction; how many it masked."""
        rows = await conn.fetch(
            _DUE, self.worker, EMAIL_CHANNEL, self.retention_seconds, self.batch
        )
        if rows:
            await conn.execute(
                _MASK,
                [row["id"] for row in rows],
                [mask_email(row["destination"]) for row in rows],
            )
        return len(rows)
