"""Ordered SQL migrations, each file kept next to the package that owns its tables.

An owning package has a ``migrations/`` folder of ``NNNN_name.sql`` files; they run in
the order of the packages the caller passes (the worker registry derives them from each
worker's declaration: ``workers.registry.migration_packages``), then by number. Each
file runs in its own transaction and is recorded in ``schema_migrations`` with its
checksum. The whole run holds a PostgreSQL advisory lock, so replicas that start
together apply each file once: the others wait, then find nothing left to do.

Every wait is bounded: connecting, and every lock (the advisory lock, and the table locks
a migration's statements take) by ``lock_timeout`` (PostgreSQL's ``lock_timeout``, which
advisory locks obey too). A migration that cannot get its lock in time is rolled back, not
left queued in front of the relays' and handlers' statements on that table (an ``ALTER
TABLE`` waiting for its lock blocks every later statement on the table), and ``migrate``
stops with a ``MigrationError`` saying so; run it again once the holder is gone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import asyncpg

from billing_fleet.logs import one_line

# Arbitrary but fixed: every billing-fleet process must use the same key ("billing").
ADVISORY_LOCK_KEY: Final = 0x62696C6C696E67

CONNECT_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_LOCK_TIMEOUT_SECONDS: Final = 10.0

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    package    text        NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text        NOT NULL,
    PRIMARY KEY (package, name)
)
"""


class MigrationError(RuntimeError):
    pass


class SchemaBehind(RuntimeError):
    """The database lacks migrations this release ships: run ``billing-fleet migrate``."""


@dataclass(frozen=True)
class Migration:
    package: str
    name: str  # the file name, e.g. "0001_runtime.sql"
    sql: str
    checksum: str  # sha256 of the file's bytes

    @property
    def label(self) -> str:
        return f"{self.package}/{self.name}"


def discover(packages: tuple[str, ...]) -> list[Migration]:
    """Every migration file, in the order they must run."""
    found: list[Migration] = []
    for package in packages:
        try:
            folder = resources.files(package).joinpath("migrations")
        except ModuleNotFoundError:
            raise MigrationError(f"migrations package {package} does not exist") from None
        except TypeError:  # a module, not a package
            raise MigrationError(
                f"migrations package {package} is a module, not a package"
            ) from None
        if not folder.is_dir():
            raise MigrationError(
                f"{package} is declared as a migrations package but has no migrations/ folder"
            )
        numbers: dict[str, str] = {}
        for entry in sorted(folder.iterdir(), key=lambda item: item.name):
            if not entry.name.endswith(".sql"):
                continue
            match = _FILE_NAME.match(entry.name)
            if match is None:
                raise MigrationError(
                    f"{package}/migrations/{entry.name}: name must be NNNN_name.sql"
                )
            if match[1] in numbers:
                raise MigrationError(
                    f"{package}/migrations: {numbers[match[1]]} and {entry.name} share a number"
                )
            numbers[match[1]] = entry.name
            data = entry.read_bytes()
            found.append(
                Migration(package, entry.name, data.decode(), hashlib.sha256(data).hexdigest())
            )
    return found


async def migrate(
    url: str, packages: tuple[str, ...], lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS
) -> list[str]:
    """Apply pending migrations on the database at ``url``; returns what it applied.

    ``MigrationError`` when a lock is not granted within ``lock_timeout`` seconds (nothing
    of the file that waited is applied; the files before it are)."""
    migrations = discover(packages)
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS)
    except OSError as exc:  # TimeoutError is one too
        raise MigrationError(
            f"cannot connect to PostgreSQL (within {CONNECT_TIMEOUT_SECONDS:g} s): {one_line(exc)}"
        ) from exc
    try:
        # For the session: the advisory lock below and every migration statement.
        await conn.execute(f"SET lock_timeout = {round(lock_timeout * 1000)}")
        try:
            # Session lock: released by unlock below, or by PostgreSQL if this process dies.
            await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        except asyncpg.LockNotAvailableError:
            raise MigrationError(
                f"another migrate has held the migration lock for more than {lock_timeout:g} s "
                "(BILLING_MIGRATE_LOCK_TIMEOUT_SECONDS); nothing applied: run it again once "
                "that one has finished"
            ) from None
        try:
            return await _apply(conn, migrations, lock_timeout)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def require_migrated(
    db: asyncpg.Pool | asyncpg.Connection, packages: tuple[str, ...]
) -> None:
    """Raise SchemaBehind unless every migration of ``packages`` in this release is
    applied: a worker of a newer release must not write to a schema without the columns
    it maintains (a worker checks the runtime's packages and its own only)."""
    try:
        rows = await db.fetch("SELECT package, name FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        rows = []
    applied = {(row["package"], row["name"]) for row in rows}
    missing = [m.label for m in discover(packages) if (m.package, m.name) not in applied]
    if missing:
        raise SchemaBehind(
            f"the database lacks {len(missing)} migration(s) of this release "
            f"({', '.join(missing)}); run `billing-fleet migrate` first"
        )


async def _apply(
    conn: asyncpg.Connection, migrations: list[Migration], lock_timeout: float
) -> list[str]:
    await conn.execute(_CREATE_TABLE)
    rows = await conn.fetch("SELECT package, name, checksum FROM schema_migrations")
    # Rows without a file here are fine: a newer release may have applied them already.
    applied = {(row["package"], row["name"]): row["checksum"] for row in rows}
    done: list[str] = []
    for migration in migrations:
        checksum = applied.get((migration.package, migration.name))
        if checksum is not None:
            if checksum != migration.checksum:
                raise MigrationError(
                    f"{migration.label} was changed after it was applied "
                    f"(recorded sha256 {checksum[:12]}…, file {migration.checksum[:12]}…); "
                    "restore it and add a new migration instead."
                )
            continue
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (package, name, checksum) VALUES ($1, $2, $3)",
                    migration.package,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.LockNotAvailableError:
            raise MigrationError(
                f"{migration.label} waited more than {lock_timeout:g} s for a table lock "
                "(BILLING_MIGRATE_LOCK_TIMEOUT_SECONDS) that another transaction holds; "
                f"rolled back, {len(done)} applied before it: run migrate again once that "
                "transaction has ended"
            ) from None
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{migration.label} failed: {exc}") from exc
        done.append(migration.label)
    return done
