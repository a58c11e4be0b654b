"""SQL of the entitlement worker (tables in ``migrations/``).

A batch locks its customers, ``load``s their rows in one query per table, and ``save``s
what the handler changed in one statement per table and kind of write, its rows in one
JSON parameter.

JSON travels as text and is cast in SQL (``$n::text::json``, ``col::text``), so the code
works whatever JSON codecs the runtime's pool registers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, Final

import asyncpg
from pydantic_core import from_json

from billing_fleet.db import json_text
from workers.entitlement.rules import (
    Addon,
    Bases,
    Effective,
    Grant,
    Grants,
    Mark,
    PastDueTrack,
    SourceGrants,
)
from workers.entitlement.state import CustomerRow, CustomerState, SourceRow

# First key of the two-key advisory locks that serialize work on one customer ("ent").
_LOCK_CLASS: Final = 0x656E74


def _grants_from(text: str) -> Grants:
    data: dict[str, Any] = from_json(text)
    return {name: Grant.from_json(value) for name, value in data.items()}


def _bases_from(text: str) -> Bases:
    data: dict[str, str | None] = from_json(text)
    return {name: datetime.fromisoformat(until) if until else None for name, until in data.items()}


def _addons_from(text: str) -> tuple[Addon, ...]:
    return tuple(Addon.from_json(addon) for addon in from_json(text))


# -- locks -----------------------------------------------------------------------------------


async def lock_customers(conn: asyncpg.Connection, customer_ids: Collection[str]) -> None:
    """Serialize all work on these customers until the transaction ends.

    One statement; the keys are taken in ascending order (PostgreSQL evaluates volatile
    output expressions after the sort), so two batches never wait for each other in a cycle.
    """
    await conn.execute(
        """
        SELECT pg_advisory_xact_lock($1, k)
        FROM (SELECT DISTINCT hashtext(c) AS k FROM unnest($2::text[]) AS c) AS keys
        ORDER BY k
        """,
        _LOCK_CLASS,
        list(customer_ids),
    )


async def try_lock_customer(conn: asyncpg.Connection, customer_id: str) -> bool:
    locked: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, customer_id
    )
    return locked


# -- loading ---------------------------------------------------------------------------------


async def load(conn: asyncpg.Connection, customer_ids: Collection[str]) -> dict[str, CustomerState]:
    """The rows of ``customer_ids`` (call with them locked); an unknown customer is empty."""
    ids = list(customer_ids)
    states = {customer_id: CustomerState(customer_id) for customer_id in ids}
    for row in await conn.fetch(
        """
        SELECT customer_id, user_id, metadata_user_id, event_at, event_rank, event_id,
               checkout_user_id, checkout_event_at, checkout_event_id
        FROM entitlement_customers WHERE customer_id = ANY($1::text[])
        """,
        ids,
    ):
        state = states[row["customer_id"]]
        state.row, state.user_id = _customer_row(row), row["user_id"]
    for row in await conn.fetch(
        """
        SELECT customer_id, source_id, kind, status, grants::text AS grants,
               snapshot::text AS snapshot, event_at, event_rank, event_id,
               past_due_track::text AS past_due_track, bases::text AS bases,
               addons::text AS addons
        FROM entitlement_sources WHERE customer_id = ANY($1::text[])
        """,
        ids,
    ):
        states[row["customer_id"]].sources[row["source_id"]] = _source_row(row)
    for row in await conn.fetch(
        """
        SELECT customer_id, feature, "limit", expires_at, sources
        FROM entitlements WHERE customer_id = ANY($1::text[])
        """,
        ids,
    ):
        states[row["customer_id"]].entitlements[row["feature"]] = Effective(
            row["limit"], row["expires_at"], tuple(row["sources"])
        )
    return states


def _customer_row(row: asyncpg.Record) -> CustomerRow:
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
        row["customer_id"], row["metadata_user_id"], mark, row["checkout_user_id"], checkout_mark
    )


def _source_row(row: asyncpg.Record) -> SourceRow:
    legacy = row["bases"] is None
    grants = SourceGrants(
        _grants_from(row["grants"]),
        {} if legacy else _bases_from(row["bases"]),
        () if legacy else _addons_from(row["addons"]),
    )
    return SourceRow(
        source_id=row["source_id"],
        kind=row["kind"],
        status=row["status"],
        grants=grants,
        mark=Mark(row["event_at"], row["event_rank"], row["event_id"]),
        snapshot=row["snapshot"],
        past_due=PastDueTrack.from_json(from_json(row["past_due_track"])),
        legacy=legacy,
    )


# -- saving ----------------------------------------------------------------------------------
# Rows travel as one JSON parameter, unpacked by ``json_to_recordset``: asyncpg checks every
# element of an array parameter against three ABCs (a Python-level isinstance each), and
# with ``unnest`` over per-column arrays that was a sixth of a worker's CPU.

_PUT_CUSTOMERS = """
INSERT INTO entitlement_customers (customer_id, user_id, user_id_from, metadata_user_id,
    event_at, event_rank, event_id, checkout_user_id, checkout_event_at, checkout_event_id)
SELECT * FROM json_to_recordset($1::text::json) AS t(customer_id text, user_id text,
    user_id_from text, metadata_user_id text, event_at timestamptz, event_rank int,
    event_id text, checkout_user_id text, checkout_event_at timestamptz,
    checkout_event_id text)
ON CONFLICT (customer_id) DO UPDATE SET
    user_id = EXCLUDED.user_id, user_id_from = EXCLUDED.user_id_from,
    metadata_user_id = EXCLUDED.metadata_user_id, event_at = EXCLUDED.event_at,
    event_rank = EXCLUDED.event_rank, event_id = EXCLUDED.event_id,
    checkout_user_id = EXCLUDED.checkout_user_id,
    checkout_event_at = EXCLUDED.checkout_event_at,
    checkout_event_id = EXCLUDED.checkout_event_id
"""
# The jsonb columns travel as JSON text inside the row: PostgreSQL turns a nested object
# of json_to_recordset into jsonb at twice the cost of parsing text (measured).
_PUT_SOURCES = """
INSERT INTO entitlement_sources (customer_id, source_id, kind, status, grants, snapshot,
    event_at, event_rank, event_id, past_due_since, past_due_track, bases, addons)
SELECT customer_id, source_id, kind, status, grants::jsonb, snapshot::jsonb, event_at,
    event_rank, event_id, past_due_since, past_due_track::jsonb, bases::jsonb, addons::jsonb
FROM json_to_recordset($1::text::json) AS t(customer_id text, source_id text, kind text,
    status text, grants text, snapshot text, event_at timestamptz, event_rank int,
    event_id text, past_due_since timestamptz, past_due_track text, bases text, addons text)
ON CONFLICT (customer_id, source_id) DO UPDATE SET
    kind = EXCLUDED.kind, status = EXCLUDED.status, grants = EXCLUDED.grants,
    snapshot = EXCLUDED.snapshot, event_at = EXCLUDED.event_at,
    event_rank = EXCLUDED.event_rank, event_id = EXCLUDED.event_id,
    past_due_since = EXCLUDED.past_due_since, past_due_track = EXCLUDED.past_due_track,
    bases = EXCLUDED.bases, addons = EXCLUDED.addons
"""
_PUT_ENTITLEMENTS = """
INSERT INTO entitlements (customer_id, feature, "limit", expires_at, sources, updated_at)
SELECT * FROM json_to_recordset($1::text::json) AS t(customer_id text, feature text,
    "limit" bigint, expires_at timestamptz, sources text[], updated_at timestamptz)
ON CONFLICT (customer_id, feature) DO UPDATE SET
    "limit" = EXCLUDED."limit", expires_at = EXCLUDED.expires_at,
    sources = EXCLUDED.sources, updated_at = EXCLUDED.updated_at
"""
_DROP_ENTITLEMENTS = """
DELETE FROM entitlements e
USING json_to_recordset($1::text::json) AS t(customer_id text, feature text)
WHERE e.customer_id = t.customer_id AND e.feature = t.feature
"""
_PUT_SCHEDULE = """
INSERT INTO entitlement_schedule (customer_id, due_at)
SELECT * FROM json_to_recordset($1::text::json) AS t(customer_id text, due_at timestamptz)
ON CONFLICT (customer_id) DO UPDATE SET due_at = EXCLUDED.due_at
"""
_DROP_SCHEDULE = """
DELETE FROM entitlement_schedule
WHERE customer_id IN (SELECT json_array_elements_text($1::text::json))
"""

Row = dict[str, Any]


async def save(conn: asyncpg.Connection, states: Iterable[CustomerState]) -> None:
    """Write back what changed in ``states``: one statement per table and kind of write."""
    customers: list[Row] = []
    sources: list[Row] = []
    put: list[Row] = []
    drop: list[Row] = []
    due: list[Row] = []
    undue: list[str] = []
    for state in states:
        customer_id = state.customer_id
        if state.row_changed and state.row is not None:
            customers.append(_customer_row_json(state.row))
        sources += [
            _source_row_json(customer_id, state.sources[source_id])
            for source_id in sorted(state.changed_sources)
        ]
        for feature, updated_at in sorted(state.changed_features.items()):
            value = state.entitlements.get(feature)
            if value is None:
                drop.append({"customer_id": customer_id, "feature": feature})
            else:
                put.append(
                    {
                        "customer_id": customer_id,
                        "feature": feature,
                        "limit": value.limit,
                        "expires_at": value.expires_at,
                        "sources": value.sources,
                        "updated_at": updated_at,
                    }
                )
        if state.due_changed:
            if state.due_at is None:
                undue.append(customer_id)
            else:
                due.append({"customer_id": customer_id, "due_at": state.due_at})
    for statement, rows in (
        (_PUT_CUSTOMERS, customers),
        (_PUT_SOURCES, sources),
        (_DROP_ENTITLEMENTS, drop),
        (_PUT_ENTITLEMENTS, put),
        (_DROP_SCHEDULE, undue),
        (_PUT_SCHEDULE, due),
    ):
        if rows:
            await conn.execute(statement, json_text(rows))


def _customer_row_json(customer: CustomerRow) -> Row:
    user_id, user_id_from = customer.user
    mark, checkout = customer.mark, customer.checkout_mark
    return {
        "customer_id": customer.customer_id,
        "user_id": user_id,
        "user_id_from": user_id_from,
        "metadata_user_id": customer.metadata_user_id,
        "event_at": mark.at if mark else None,
        "event_rank": mark.rank if mark else None,
        "event_id": mark.event_id if mark else None,
        "checkout_user_id": customer.checkout_user_id,
        "checkout_event_at": checkout.at if checkout else None,
        "checkout_event_id": checkout.event_id if checkout else None,
    }


def _source_row_json(customer_id: str, source: SourceRow) -> Row:
    grants = source.grants
    return {
        "customer_id": customer_id,
        "source_id": source.source_id,
        "kind": source.kind,
        "status": source.status,
        "grants": json_text(
            {name: grant.to_json() for name, grant in sorted(grants.features.items())}
        ),
        "snapshot": source.snapshot,
        "event_at": source.mark.at,
        "event_rank": source.mark.rank,
        "event_id": source.mark.event_id,
        "past_due_since": source.past_due.since,
        "past_due_track": json_text(source.past_due.to_json()),
        "bases": json_text(
            {
                name: until.isoformat() if until else None
                for name, until in sorted(grants.bases.items())
            }
        ),
        "addons": json_text([addon.to_json() for addon in grants.addons]),
    }


# -- schedule of time-driven changes -----------------------------------------------------------


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
