"""The entitlement worker benchmark's ceiling: the same effects with no framework,
batched SQL (the loop, lanes and process are ``bench.raw_loop``'s).

Each lane is one asyncpg transaction: the dedupe insert into ``processed_events``, the
subscription source rows (kept only when newer, as the worker does), the effective
``entitlements`` rows per (customer, feature) (upserted where changed, dropped features
deleted) and one ``outbox`` row per changed entitlement (the worker's change event: the
same JSON body and CloudEvents headers). Each statement is a single ``unnest`` over the
lane: one round trip per table, not per event.

Usage: ``python -m bench.raw_consumer BOOTSTRAP DATABASE_URL GROUP BATCH EXPECT
FETCH_WAIT_MS LANES``; exits once EXPECT records were applied (or on SIGINT/SIGTERM).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import asyncpg

from bench import raw_loop
from bench.events import plan_features
from bench.raw_loop import Record
from contracts import ENTITLEMENT_CHANGES
from contracts.entitlements import EntitlementChangeType
from workers.entitlement.handler import change_event
from workers.entitlement.rules import EVENT_RANK, Effective

SOURCES = """
INSERT INTO entitlement_sources AS s (customer_id, source_id, kind, status, grants, snapshot,
    event_at, event_rank, event_id, past_due_since, past_due_track)
SELECT c, src, 'subscription', st, g::jsonb, snap::jsonb, at, r, e, NULL, pd::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::int[], $8::text[], $9::text[]) AS t(c, src, st, g, snap, at, r, e, pd)
ON CONFLICT (customer_id, source_id) DO UPDATE SET
    status = EXCLUDED.status, grants = EXCLUDED.grants, snapshot = EXCLUDED.snapshot,
    event_at = EXCLUDED.event_at, event_rank = EXCLUDED.event_rank,
    event_id = EXCLUDED.event_id, past_due_track = EXCLUDED.past_due_track
WHERE (s.event_at, s.event_rank, s.event_id)
    < (EXCLUDED.event_at, EXCLUDED.event_rank, EXCLUDED.event_id)
RETURNING customer_id
"""
UPSERT = """
INSERT INTO entitlements (customer_id, feature, "limit", expires_at, sources, updated_at)
SELECT c, f, l, NULL, ARRAY[src], now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS t(c, f, l, src)
ON CONFLICT (customer_id, feature) DO UPDATE SET
    "limit" = EXCLUDED."limit", expires_at = EXCLUDED.expires_at,
    sources = EXCLUDED.sources, updated_at = EXCLUDED.updated_at
WHERE (entitlements."limit", entitlements.expires_at, entitlements.sources)
    IS DISTINCT FROM (EXCLUDED."limit", EXCLUDED.expires_at, EXCLUDED.sources)
RETURNING customer_id, feature, "limit", sources, xmax = 0 AS inserted
"""
DROP = """
DELETE FROM entitlements e WHERE e.customer_id = ANY($1::text[])
AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::text[]) AS k(c, f)
                WHERE k.c = e.customer_id AND k.f = e.feature)
RETURNING customer_id, feature
"""
OUTBOX = """
INSERT INTO outbox (topic, key, value, headers)
SELECT $1, k, v, h::jsonb FROM unnest($2::bytea[], $3::bytea[], $4::text[]) AS t(k, v, h)
"""


@cache
def _grants(price_id: str, quantity: int) -> tuple[str, tuple[tuple[str, int | None], ...]]:
    features = plan_features(price_id, quantity)
    grants = {name: {"limit": limit, "expires_at": None} for name, limit in features.items()}
    return json.dumps(grants, sort_keys=True), tuple(features.items())


async def apply(conn: asyncpg.Connection, consumer: str, records: Sequence[Record]) -> None:
    events = [json.loads(r.value or b"") for r in records]
    ids = [e["source"]["stripe_event_id"] for e in events]
    async with conn.transaction():
        new = await raw_loop.claim(conn, consumer, ids)
        # Per customer, the last new event of the batch (offset order within a key).
        latest: dict[str, dict[str, Any]] = {}
        for event_id, event in zip(ids, events, strict=True):
            if event_id in new:
                latest[event["customer_id"]] = event
        rows: list[tuple[Any, ...]] = []
        for customer, event in latest.items():
            sub = event["subscription"]
            item = sub["items"][0]
            grants, _ = _grants(item["price_id"], item["quantity"])
            mark = [
                event["occurred_at"],
                EVENT_RANK[event["type"]],
                event["source"]["stripe_event_id"],
            ]
            rows.append(
                (
                    customer,
                    sub["id"],
                    sub["status"],
                    grants,
                    json.dumps(sub),
                    datetime.fromisoformat(event["occurred_at"]),
                    mark[1],
                    mark[2],
                    json.dumps({"last_ok": mark, "due": []}),
                )
            )
        if not rows:
            return
        changed = {r[0] for r in await conn.fetch(SOURCES, *map(list, zip(*rows, strict=True)))}
        written: list[tuple[str, str, int | None, str]] = []
        for customer in changed:
            sub = latest[customer]["subscription"]
            item = sub["items"][0]
            _, features = _grants(item["price_id"], item["quantity"])
            written += [(customer, name, limit, sub["id"]) for name, limit in features]
        if not written:
            return
        columns = [list(column) for column in zip(*written, strict=True)]
        # Rows inserted or changed (unchanged ones are left alone, as the worker's diff does).
        changes = [
            (c, f, "entitlement.granted" if inserted else "entitlement.updated", limit, sources)
            for c, f, limit, sources, inserted in await conn.fetch(UPSERT, *columns)
        ]
        dropped = await conn.fetch(DROP, list(changed), columns[0], columns[1])
        changes += [(c, f, "entitlement.revoked", None, []) for c, f in dropped]
        # The change events the worker emits: the same body and CloudEvents headers.
        outbox = [_change(latest[customer], *change) for customer, *change in changes]
        await conn.execute(OUTBOX, ENTITLEMENT_CHANGES, *map(list, zip(*outbox, strict=True)))


def _change(
    event: dict[str, Any],
    feature: str,
    change_type: EntitlementChangeType,
    limit: int | None,
    sources: list[str],
) -> tuple[bytes, bytes, str]:
    """The worker's change event for this row (its own builder: the same bytes), as the
    outbox statement's key, value and headers."""
    stripe_id = event["source"]["stripe_event_id"]
    value = None if change_type == "entitlement.revoked" else Effective(limit, None, (*sources,))
    at = datetime.fromisoformat(event["occurred_at"])
    change = change_event(
        event["customer_id"], None, change_type, feature, value, stripe_id, at, by=stripe_id
    )
    return change.key.encode(), change.value, json.dumps(change.headers)


async def prepare(conn: asyncpg.Connection) -> raw_loop.Apply:
    return apply


if __name__ == "__main__":
    sys.exit(raw_loop.main(prepare))
