"""Merging one feature held through several Stripe customers of one user, and the read
API's SQL reading only the entitlement worker's read views."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import workers.entitlement
from api_gateway.access_store import QUERIES, READ_VIEWS, Grant, merge

MAY = datetime(2030, 5, 1, tzinfo=UTC)
JUNE = datetime(2030, 6, 1, tzinfo=UTC)


def grant(limit: int | None, expires_at: datetime | None, *sources: str) -> Grant:
    return Grant("seats", limit, expires_at, sources)


def test_a_single_grant_is_unchanged() -> None:
    only = grant(3, MAY, "sub_a")
    assert merge([only]) is only


def test_highest_limit_and_latest_expiry_win_each_on_its_own() -> None:
    merged = merge([grant(10, MAY, "sub_a"), grant(5, JUNE, "sub_b")])
    assert (merged.limit, merged.expires_at) == (10, JUNE)
    assert merged.source == "sub_a"  # the grant that gives the limit
    assert merged.sources == ("sub_a", "sub_b")


def test_unlimited_and_no_expiry_win() -> None:
    merged = merge([grant(100, None, "pi_a"), grant(None, JUNE, "sub_b", "pi_a")])
    assert (merged.limit, merged.expires_at) == (None, None)
    assert merged.source == "sub_b"
    assert merged.sources == ("sub_b", "pi_a")


def test_grant_without_sources_has_no_source() -> None:
    merged = merge([grant(1, MAY), grant(1, MAY)])
    assert (merged.source, merged.sources) == (None, ())


# The relation after every FROM or JOIN, unquoted or quoted (a LATERAL subquery is none).
RELATION = re.compile(r'\b(?:FROM|JOIN)\s+(?!LATERAL\b)("[^"]+"|[A-Za-z_][\w.$]*)', re.IGNORECASE)
READ_VIEWS_MIGRATION = (
    Path(workers.entitlement.__file__).parent / "migrations" / "0003_read_views.sql"
)


def test_every_query_reads_only_the_workers_read_views() -> None:
    read = {name.strip('"') for sql in QUERIES for name in RELATION.findall(sql)}
    assert read == READ_VIEWS  # each view is used, no table is
    assert all(name.startswith("read_v1_") for name in read)


def test_the_read_views_are_created_by_the_workers_migrations() -> None:
    created = re.findall(r"^CREATE VIEW (\w+)", READ_VIEWS_MIGRATION.read_text(), re.MULTILINE)
    assert set(created) == READ_VIEWS
