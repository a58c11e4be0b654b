"""SQL of the entitlement worker (tables in ``migrations/``).

A batch locks its customers, ``load``s their rows in one query per table, and ``save``s
what the handler changed in one ``unnest`` statement per table and kind of write.

JSON columns are passed as text and cast in SQL (``$n::text::jsonb``, ``col::text``), so
the code works whatever JSON codecs the runtime's pool registers.
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


def _grants_json(grants: Grants) -> str:
    return json_text({name: grant.to_json() for name, grant in sorted(grants.items())})


def _grants_from(text: str) -> Grants:
    data: dict[str, Any] = from_json(text)
    return {name: Grant.from_json(value) for name, value in data.items()}


def _bases_json(bases: Bases) -> str:
    return json_text(
        {name: until.isoformat() if until else None for name, until in sorted(bases.items())}
    )


def _bases_from(text: str) -> Bases:
    data: dict[str, str | None] = from_json(text)
    return {name: datetime.fromisoformat(until) if until else None for name, until in data.items()}


def _addons_json(addons: Iterable[Addon]) -> str:
    return json_text([addon.to_json() for addon in addons])


def _addons_from(text: str) -> tuple[Addon, ...]:
    return tuple(Addon.from_json(addon) for addon in from_json(text))


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows (at least one) -> one list per column, the arguments of an ``unnest``."""
    return [list(column) for column in zip(*rows, strict=True)]


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

_PUT_CUSTOMERS = """
INSERT INTO entitlement_customers (customer_id, user_id, user_id_from, metadata_user_id,
    event_at, event_rank, event_id, checkout_user_id, checkout_event_at, checkout_event_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
    $6::int[], $7::text[], $8::text[], $9::timestamptz[], $10::text[])
ON CONFLICT (customer_id) DO UPDATE SET
    user_id = EXCLUDED.user_id, user_id_from = EXCLUDED.user_id_from,
    metadata_user_id = EXCLUDED.metadata_user_id, event_at = EXCLUDED.event_at,
    event_rank = EXCLUDED.event_rank, event_id = EXCLUDED.event_id,
    checkout_user_id = EXCLUDED.checkout_user_id,
    checkout_event_at = EXCLUDED.checkout_event_at,
    checkout_event_id = EXCLUDED.checkout_event_id
"""
_PUT_SOURCES = """
INSERT INTO entitlement_sources (customer_id, source_id, kind, status, grants, snapshot,
    event_at, event_rank, event_id, past_due_since, past_due_track, bases, addons)
SELECT c, s, k, st, g::jsonb, snap::jsonb, at, r, e, pds, pdt::jsonb, b::jsonb, a::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[], $8::int[], $9::text[], $10::timestamptz[], $11::text[], $12::text[],
    $13::text[]) AS t(c, s, k, st, g, snap, at, r, e, pds, pdt, b, a)
ON CONFLICT (customer_id, source_id) DO UPDATE SET
    kind = EXCLUDED.kind, status = EXCLUDED.status, grants = EXCLUDED.grants,
    snapshot = EXCLUDED.snapshot, event_at = EXCLUDED.event_at,
    event_rank = EXCLUDED.event_rank, event_id = EXCLUDED.event_id,
    past_due_since = EXCLUDED.past_due_since, past_due_track = EXCLUDED.past_due_track,
    bases = EXCLUDED.bases, addons = EXCLUDED.addons
"""
# Each row's sources (a text[] of its own length) travel as an array literal: unnest
# would flatten a two-dimensional array.
_PUT_ENTITLEMENTS = """
INSERT INTO entitlements (customer_id, feature, "limit", expires_at, sources, updated_at)
SELECT c, f, l, x, src::text[], u
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[],
    $6::timestamptz[]) AS t(c, f, l, x, src, u)
ON CONFLICT (customer_id, feature) DO UPDATE SET
    "limit" = EXCLUDED."limit", expires_at = EXCLUDED.expires_at,
    sources = EXCLUDED.sources, updated_at = EXCLUDED.updated_at
"""
_DROP_ENTITLEMENTS = """
DELETE FROM entitlements e USING unnest($1::text[], $2::text[]) AS t(c, f)
WHERE e.customer_id = t.c AND e.feature = t.f
"""
_PUT_SCHEDULE = """
INSERT INTO entitlement_schedule (customer_id, due_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[])
ON CONFLICT (customer_id) DO UPDATE SET due_at = EXCLUDED.due_at
"""
_DROP_SCHEDULE = "DELETE FROM entitlement_schedule WHERE customer_id = ANY($1::text[])"


async def save(conn: asyncpg.Connection, states: Iterable[CustomerState]) -> None:
    """Write back what changed in ``states``: one statement per table and kind of write."""
    customers: list[tuple[Any, ...]] = []
    sources: list[tuple[Any, ...]] = []
    put: list[tuple[Any, ...]] = []
    drop: list[tuple[str, str]] = []
    due: list[tuple[str, datetime]] = []
    undue: list[str] = []
    for state in states:
        if state.row_changed and state.row is not None:
            customers.append(_customer_values(state.row))
        sources += [
            _source_values(state.customer_id, state.sources[source_id])
            for source_id in sorted(state.changed_sources)
        ]
        for feature, updated_at in sorted(state.changed_features.items()):
            value = state.entitlements.get(feature)
            if value is None:
                drop.append((state.customer_id, feature))
            else:
                put.append(
                    (
                        state.customer_id,
                        feature,
                        value.limit,
                        value.expires_at,
                        _text_array(value.sources),
                        updated_at,
                    )
                )
        if state.due_changed:
            if state.due_at is None:
                undue.append(state.customer_id)
            else:
                due.append((state.customer_id, state.due_at))
    if customers:
        await conn.execute(_PUT_CUSTOMERS, *_columns(customers))
    if sources:
        await conn.execute(_PUT_SOURCES, *_columns(sources))
    if drop:
        await conn.execute(_DROP_ENTITLEMENTS, *_columns(drop))
    if put:
        await conn.execute(_PUT_ENTITLEMENTS, *_columns(put))
    if undue:
        await conn.execute(_DROP_SCHEDULE, undue)
    if due:
        await conn.execute(_PUT_SCHEDULE, *_columns(due))


def _text_array(values: Iterable[str]) -> str:
    """A ``text[]`` literal of ``values``, each element quoted and escaped."""
    quoted = (value.replace("\\", "\\\\").replace('"', '\\"') for value in values)
    return "{" + ",".join(f'"{value}"' for value in quoted) + "}"


def _customer_values(customer: CustomerRow) -> tuple[Any, ...]:
    user_id, user_id_from = customer.user
    mark, checkout = customer.mark, customer.checkout_mark
    return (
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


def _source_values(customer_id: str, source: SourceRow) -> tuple[Any, ...]:
    return (
        customer_id,
        source.source_id,
        source.kind,
        source.status,
        _grants_json(source.grants.features),
        source.snapshot,
        source.mark.at,
        source.mark.rank,
        source.mark.event_id,
        source.past_due.since,
        json_text(source.past_due.to_json()),
        _bases_json(source.grants.bases),
        _addons_json(source.grants.addons),
    )


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
