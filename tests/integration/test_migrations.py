"""Migrations against a real PostgreSQL: ordered, recorded, once only, tamper-evident."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from billing_fleet.migrate import ADVISORY_LOCK_KEY, MigrationError, discover, migrate
from workers.registry import migration_packages

pytestmark = pytest.mark.integration

ALL = [m.label for m in discover(migration_packages())]


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def test_applies_every_migration_and_records_its_checksum(create_database: Any) -> None:
    url = await create_database()

    assert (
        await migrate(url, migration_packages())
        == ALL
        == [
            "workers.runtime/0001_runtime.sql",
            "workers.runtime/0002_dlt_replays.sql",
            "workers.runtime/0003_outbox_delete_relayed.sql",
            "workers.runtime/0004_dlt_replays_by_letter_id.sql",
            "workers.runtime/0005_outbox_per_worker.sql",
            "workers.runtime/0006_deliveries.sql",
            "workers.runtime/0007_deliveries_per_destination.sql",
            "workers.entitlement/0001_entitlements.sql",
            "workers.entitlement/0002_source_bases_addons.sql",
            "workers.entitlement/0003_read_views.sql",
            "workers.invoice/0001_ledger.sql",
            "workers.invoice/0002_read_views.sql",
            "workers.invoice/0003_invoice_documents.sql",
            "workers.notification/0001_notifications.sql",
            "workers.notification/0002_webhook_endpoints.sql",
        ]
    )

    recorded = await _fetch(url, "SELECT package, name, checksum FROM schema_migrations")
    assert {(r["package"], r["name"], r["checksum"]) for r in recorded} == {
        (m.package, m.name, m.checksum) for m in discover(migration_packages())
    }
    tables = await _fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    expected = {"processed_events", "outbox", "dlt_replays", "schema_migrations"}
    assert expected <= {r["tablename"] for r in tables}
    columns = await _fetch(
        url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox'"
    )
    # 0003: relayed rows are deleted, so nothing marks them published any more; 0005: each
    # row names its worker.
    assert {r["column_name"] for r in columns} == {
        "id",
        "worker",
        "topic",
        "key",
        "value",
        "headers",
        "created_at",
    }


async def test_second_run_applies_nothing(database_url: str) -> None:
    assert await migrate(database_url, migration_packages()) == []


async def test_concurrent_runs_wait_for_the_lock_and_apply_each_file_once(
    create_database: Any,
) -> None:
    url = await create_database()
    holder = await asyncpg.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        runs = [asyncio.create_task(migrate(url, migration_packages())) for _ in range(2)]
        await asyncio.sleep(0.5)
        assert not any(run.done() for run in runs), "migrate() did not wait for the lock"
        await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        results = await asyncio.gather(*runs)
    finally:
        await holder.close()

    assert sorted(results, key=len) == [[], ALL]
    rows = await _fetch(url, "SELECT package, name FROM schema_migrations")
    assert len(rows) == len(ALL)


async def test_changed_file_is_refused_and_the_lock_released(create_database: Any) -> None:
    url = await create_database(migrated=True)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited-by-hand'")

        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(url, migration_packages())

        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


@pytest.fixture
def scratch_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable package ``<name>`` with an empty ``migrations/`` folder."""
    name = f"scratch_migrations_{secrets.token_hex(4)}"
    (tmp_path / name / "migrations").mkdir(parents=True)
    (tmp_path / name / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, tmp_path / name / "migrations"


async def test_each_file_is_its_own_transaction(
    create_database: Any, scratch_package: tuple[str, Path]
) -> None:
    package, folder = scratch_package
    (folder / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (folder / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT * FROM missing;")
    url = await create_database()

    with pytest.raises(MigrationError, match=re.escape(f"{package}/0002_bad.sql failed")):
        await migrate(url, packages=("workers.runtime", package))

    names = {r["name"] for r in await _fetch(url, "SELECT name FROM schema_migrations")}
    runtime = {m.name for m in discover(("workers.runtime",))}
    assert names == runtime | {"0001_good.sql"}
    tables = {r["tablename"] for r in await _fetch(url, "SELECT tablename FROM pg_tables")}
    assert "good" in tables and "half" not in tables


def test_badly_named_file_is_refused(scratch_package: tuple[str, Path]) -> None:
    package, folder = scratch_package
    (folder / "1_too_short.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=re.escape("NNNN_name.sql")):
        discover((package,))


async def test_a_held_migration_lock_stops_migrate_within_its_bound(create_database: Any) -> None:
    url = await create_database()
    holder = await asyncpg.connect(url)  # another migrate, stuck or slow
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        with pytest.raises(MigrationError, match=r"another migrate has held the migration lock"):
            await migrate(url, migration_packages(), lock_timeout=0.3)
        [nothing] = await _fetch(url, "SELECT to_regclass('schema_migrations') AS t")
        assert nothing["t"] is None  # it wrote nothing: not even the migrations table
        await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)

        assert await migrate(url, migration_packages(), lock_timeout=0.3) == ALL
    finally:
        await holder.close()


OUTBOX_PER_WORKER = "workers.runtime/0005_outbox_per_worker.sql"


async def _before_outbox_per_worker(url: str) -> None:
    """The schema of a release before 0005 (everything else applied)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "DROP INDEX outbox_by_worker; ALTER TABLE outbox DROP COLUMN worker;"
            "DELETE FROM schema_migrations WHERE name = '0005_outbox_per_worker.sql'"
        )
    finally:
        await conn.close()


async def test_a_migration_behind_a_long_transaction_gives_up_and_applies_later(
    create_database: Any,
) -> None:
    url = await create_database(migrated=True)
    await _before_outbox_per_worker(url)
    reader = await asyncpg.connect(url)  # a relay's transaction that takes long
    try:
        transaction = reader.transaction()
        await transaction.start()
        await reader.execute("LOCK TABLE outbox IN ACCESS SHARE MODE")

        with pytest.raises(
            MigrationError,
            match=re.escape(f"{OUTBOX_PER_WORKER} waited more than 0.3 s for a table lock"),
        ):
            await migrate(url, migration_packages(), lock_timeout=0.3)
        # Rolled back whole: the column is not there, the file not recorded.
        assert (
            await reader.fetchval(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = 'outbox' AND column_name = 'worker'"
            )
            == 0
        )
        await transaction.commit()

        assert await migrate(url, migration_packages(), lock_timeout=0.3) == [OUTBOX_PER_WORKER]
    finally:
        await reader.close()
