"""The ledger read API's SQL reads only the invoice worker's read views."""

from __future__ import annotations

import re
from pathlib import Path

import workers.invoice
from api_gateway.ledger_store import QUERIES, READ_VIEWS
from tests.unit.test_access_store import RELATION

READ_VIEWS_MIGRATION = Path(workers.invoice.__file__).parent / "migrations" / "0002_read_views.sql"


def test_every_query_reads_only_the_workers_read_views() -> None:
    read = {name.strip('"') for sql in QUERIES for name in RELATION.findall(sql)}
    assert read == READ_VIEWS  # each view is used, no table is
    assert all(name.startswith("read_v1_") for name in read)


def test_the_read_views_are_created_by_the_workers_migrations() -> None:
    created = re.findall(r"^CREATE VIEW (\w+)", READ_VIEWS_MIGRATION.read_text(), re.MULTILINE)
    assert set(created) == READ_VIEWS


def test_every_list_pages_by_its_index_order() -> None:
    """Each list's ORDER BY is its table's index on (customer_id, created_at DESC, id DESC),
    the order the keyset condition and the cursor assume."""
    lists = [sql for sql in QUERIES if "LIMIT $6" in sql]
    assert len(lists) == 6  # three lists, for a user and for a customer
    for sql in lists:
        order = re.search(r"ORDER BY t\.created_at DESC, t\.(\w+) DESC", sql)
        assert order is not None, sql
        assert f"(t.created_at, t.{order[1]})" in sql, sql
