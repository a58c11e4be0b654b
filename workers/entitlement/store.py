"""SQL of the entitlement worker (tables in ``migrations/0001_entitlements.sql``).

JSON columns are passed as text and cast in SQL (``$n::text::jsonb``, ``col::text``), so
the code works whatever JSON codecs the runtime's pool registers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg

from workers.entitlement.rules import Effective, Grant, Grants, Mark, PastDueTrack

# First key of the two-key advisory locks that serialize work on one customer ("ent").
_LOCK_CLASS: Final = 0x656E74


@dataclass(frozen=True)
class SourceRow:
    source_id: str
    kind: str
    status: str
    grants: Grants
    mark: Mark
    snapshot: str | None = None
    """JSON of the newest subscription object applied (subscriptions only)."""
    past_due: PastDueTrack = field(default_factory=PastDueTrack)


@dataclass(frozen=True)
class CustomerRow:
    customer_id: str
    metadata_user_id: str | None = None
    mark: Mark | None = None
    checkout_user_id: str | None = None
    checkout_mark: Mark | None = None

    @property
    def user(self) -> tuple[str | None, str | None]:
        """(user id, where it came from): metadata wins over checkout."""
        if self.metadata_user_id:
            return self.metadata_user_id, "metadata"
        if self.checkout_user_id:
            return self.checkout_user_id, "checkout"
        return None, None


def _grants_json(grants: Grants) -> str:
    return json.dumps({name: grant.to_json() for name, grant in sorted(grants.items())})


def _grants_from(text: str) -> Grants:
    data: dict[str, Any] = json.loads(text)
    return {name: Grant.from_json(value) for name, value in data.items()}


# -- locks -----------------------------------------------------------------------------------


async def lock_customer(conn: asyncpg.Connection, customer_id: str) -> None:
    """Serialize all work on one customer until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, customer_id)


async def try_lock_customer(conn: asyncpg.Connection, customer_id: str) -> bool:
    locked: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, customer_id
    )
    return locked


# -- sources ---------------------------------------------------------------------------------


async def get_source(
    conn: asyncpg.Connection, customer_id: str, source_id: str
) -> SourceRow | None:
    row = await conn.fetchrow(
        """
        SELECT source_id, kind, status, grants::text AS grants, snapshot::text AS snapshot,
               event_at, event_rank, event_id, past_due_track::text AS past_due_track
        FROM entitlement_sources WHERE customer_id = $1 AND source_id = $2
        """,
        customer_id,
        source_id,
    )
    if row is None:
        return None
    return SourceRow(
        source_id=row["source_id"],
        kind=row["kind"],
        status=row["status"],
        grants=_grants_from(row["grants"]),
        mark=Mark(row["event_at"], row["event_rank"], row["event_id"]),
        snapshot=row["snapshot"],
        past_due=PastDueTrack.from_json(json.loads(row["past_due_track"])),
    )


async def put_source(conn: asyncpg.Connection, customer_id: str, source: SourceRow) -> None:
    await conn.execute(
        """
        INSERT INTO entitlement_sources (customer_id, source_id, kind, status, grants, snapshot,
            event_at, event_rank, event_id, past_due_since, past_due_track)
        VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7, $8, $9, $10,
                $11::text::jsonb)
        ON CONFLICT (customer_id, source_id) DO UPDATE SET
            kind = EXCLUDED.kind, status = EXCLUDED.status, grants = EXCLUDED.grants,
            snapshot = EXCLUDED.snapshot, event_at = EXCLUDED.event_at,
            event_rank = EXCLUDED.event_rank, event_id = EXCLUDED.event_id,
            past_due_since = EXCLUDED.past_due_since, past_due_track = EXCLUDED.past_due_track
        """,
        customer_id,
        source.source_id,
        source.kind,
        source.status,
        _grants_json(source.grants),
        source.snapshot,
        source.mark.at,
        source.mark.rank,
        source.mark.event_id,
        source.past_due.since,
        json.dumps(source.past_due.to_json()),
    )


async def grants_of(conn: asyncpg.Connection, customer_id: str) -> dict[str, Grants]:
    rows = await conn.fetch(
        "SELECT source_id, grants::text AS grants FROM entitlement_sources WHERE customer_id = $1",
        customer_id,
    )
    return {row["source_id"]: _grants_from(row["grants"]) for row in rows}


# -- effective entitlements ------------------------------------------------------------------


async def entitlements_of(conn: asyncpg.Connection, customer_id: str) -> dict[str, Effective]:
    rows = await conn.fetch(
        'SELECT feature, "limit", expires_at, sources FROM entitlements WHERE customer_id = $1',
        customer_id,
    )
    return {
        row["feature"]: Effective(row["limit"], row["expires_at"], tuple(row["sources"]))
        for row in rows
    }


async def put_entitlement(
    conn: asyncpg.Connection, customer_id: str, feature: str, value: Effective, now: datetime
) -> None:
    await conn.execute(
        """
        INSERT INTO entitlements (customer_id, feature, "limit", expires_at, sources, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (customer_id, feature) DO UPDATE SET
            "limit" = EXCLUDED."limit", expires_at = EXCLUDED.expires_at,
            sources = EXCLUDED.sources, updated_at = EXCLUDED.updated_at
        """,
        customer_id,
        feature,
        value.limit,
        value.expires_at,
        list(value.sources),
        now,
    )


async def delete_entitlement(conn: asyncpg.Connection, customer_id: str, feature: str) -> None:
    await conn.execute(
        "DELETE FROM entitlements WHERE customer_id = $1 AND feature = $2", customer_id, feature
    )


# -- schedule of time-driven changes -----------------------------------------------------------


async def set_due(conn: asyncpg.Connection, customer_id: str, due_at: datetime | None) -> None:
    if due_at is None:
        await conn.execute("DELETE FROM entitlement_schedule WHERE customer_id = $1", customer_id)
        return
    await conn.execute(
        """
        INSERT INTO entitlement_schedule (customer_id, due_at) VALUES ($1, $2)
        ON CONFLICT (customer_id) DO UPDATE SET due_at = EXCLUDED.due_at
        """,
        customer_id,
        due_at,
    )


async def due_customers(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> list[tuple[str, datetime]]:
    rows = await conn.fetch(
        """
        SELECT customer_id, due_at FROM entitlement_schedule
        WHERE due_at <= $1 ORDER BY due_at LIMIT $2
        """,
        now,
        limit,
    )
    return [(row["customer_id"], row["due_at"]) for row in rows]


async def due_at(conn: asyncpg.Connection, customer_id: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT due_at FROM entitlement_schedule WHERE customer_id = $1", customer_id
    )
    return value


# -- customers -------------------------------------------------------------------------------


async def get_customer(conn: asyncpg.Connection, customer_id: str) -> CustomerRow | None:
    row = await conn.fetchrow(
        """
        SELECT metadata_user_id, event_at, event_rank, event_id,
               checkout_user_id, checkout_event_at, checkout_event_id
        FROM entitlement_customers WHERE customer_id = $1
        """,
        customer_id,
    )
    if row is None:
        return None
    mark = (
        Mark(row["event_at"], row["event_rank"], row["event_id"])
        if row["event_at"] is not None
        else None
    )
    checkout_mark = (
        Mark(row["checkout_event_at"], 0, row["checkout_event_id"])
        if row["checkout_event_at"] is not None
        else None
    )
    return CustomerRow(
        customer_id, row["metadata_user_id"], mark, row["checkout_user_id"], checkout_mark
    )


async def put_customer(conn: asyncpg.Connection, customer: CustomerRow) -> None:
    user_id, user_id_from = customer.user
    mark, checkout = customer.mark, customer.checkout_mark
    await conn.execute(
        """
        INSERT INTO entitlement_customers (customer_id, user_id, user_id_from, metadata_user_id,
            event_at, event_rank, event_id, checkout_user_id, checkout_event_at, checkout_event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (customer_id) DO UPDATE SET
            user_id = EXCLUDED.user_id, user_id_from = EXCLUDED.user_id_from,
            metadata_user_id = EXCLUDED.metadata_user_id, event_at = EXCLUDED.event_at,
            event_rank = EXCLUDED.event_rank, event_id = EXCLUDED.event_id,
            checkout_user_id = EXCLUDED.checkout_user_id,
            checkout_event_at = EXCLUDED.checkout_event_at,
            checkout_event_id = EXCLUDED.checkout_event_id
        """,
        customer.customer_id,
        user_id,
        user_id_from,
        customer.metadata_user_id,
        mark.at if mark else None,
        mark.rank if mark else None,
        mark.event_id if mark else None,
        customer.checkout_user_id,
        checkout.at if checkout else None,
        checkout.event_id if checkout else None,
    )


async def user_id_of(conn: asyncpg.Connection, customer_id: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT user_id FROM entitlement_customers WHERE customer_id = $1", customer_id
    )
    return value
