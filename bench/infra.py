"""What the worker and end-to-end benchmarks share: databases, commands, publishing."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaProducer

from api_gateway.publisher import MAX_BATCH_BYTES
from bench.events import Message
from billing_fleet.migrate import migrate
from contracts import BILLING_EVENTS
from fleet.embedded import EmbeddedPostgres
from workers.registry import migration_packages

# Settings the subprocesses must not inherit from the caller's shell.
_SCRUBBED = ("DATABASE_URL", "BILLING_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")


def postgres_server(stack: ExitStack, workdir: Path) -> str:
    """URL of the server the run creates its databases on: DATABASE_URL or an embedded one."""
    external = os.environ.get("DATABASE_URL") or os.environ.get("BILLING_DATABASE_URL")
    if external:
        return external
    print("starting embedded PostgreSQL ...", file=sys.stderr, flush=True)
    server = stack.enter_context(EmbeddedPostgres(workdir / "pgdata", delete_on_stop=True))
    return server.url


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


ANALYZE_EVERY_S = 2.0
ANALYZE_TIMEOUT_S = 30.0


async def _admin(server_url: str, statement: str, timeout: float | None = None) -> None:
    conn = await asyncpg.connect(server_url, timeout=timeout or 60.0)
    try:
        await conn.execute(statement, timeout=timeout)
    finally:
        await conn.close()


# The tables autoanalyze would look at now: changed by more rows than its threshold
# (50 rows and a tenth of the table, by default) since their statistics were taken.
_DUE_FOR_ANALYZE = """
SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables
WHERE n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
    + current_setting('autovacuum_analyze_scale_factor')::float8 * n_live_tup
"""


async def _analyze_due(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=ANALYZE_TIMEOUT_S)
    try:
        tables = [row[0] for row in await conn.fetch(_DUE_FOR_ANALYZE)]
        if tables:
            await conn.execute(f"ANALYZE {', '.join(tables)}", timeout=ANALYZE_TIMEOUT_S)
    finally:
        await conn.close()


@contextmanager
def analyzed(database_url: str, every_s: float = ANALYZE_EVERY_S) -> Iterator[None]:
    """ANALYZE the tables autoanalyze would, now and every ``every_s`` while the block runs.

    A production ledger's tables are large and autovacuum keeps their statistics; a
    bench's fresh database starts empty, and within a run autovacuum (a minute's nap)
    never looks. The workers' statements are prepared and PostgreSQL keeps a generic
    plan chosen while a table was tiny: a sequential scan, kept while the table grows to
    thousands of rows, per lookup. Each round here analyzes the tables autoanalyze would
    pick (its threshold of changed rows, read from the server's settings), and so
    replans their statements, as it does in production, on a shorter clock (a plain
    ``ANALYZE`` would go through every table, the system catalogs included, each round).
    Its CPU is PostgreSQL's, in the run's figures."""
    stop = threading.Event()

    def analyze() -> None:
        try:
            asyncio.run(_analyze_due(database_url))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            print(f"bench: ANALYZE failed (the next round retries): {exc!r}", file=sys.stderr)

    def rounds() -> None:
        while not stop.wait(every_s):
            analyze()

    analyze()
    thread = threading.Thread(target=rounds, name="bench-analyze", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=ANALYZE_TIMEOUT_S + 5)


@contextmanager
def fresh_database(server_url: str, label: str) -> Iterator[str]:
    """A new, migrated database on ``server_url``, dropped afterwards."""
    name = f"bench_{label}_{secrets.token_hex(4)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        url = _with_database(server_url, name)
        asyncio.run(migrate(url, migration_packages()))
        yield url
    finally:
        # FORCE: a subprocess that was killed hard may still hold a connection.
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def billing_fleet(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("billing-fleet")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "fleet.cli", *args]


def child_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(settings)
    return env


def worker_env(
    bootstrap: str, database_url: str, http_port: int, extra: Mapping[str, str]
) -> dict[str, str]:
    return child_env(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        DATABASE_URL=database_url,
        BILLING_WORKER_HTTP_PORT=str(http_port),
        **extra,
    )


async def publish(bootstrap: str, messages: Sequence[Message], topic: str = BILLING_EVENTS) -> None:
    """Produce ``messages`` in order (per key, order is what the worker relies on)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        max_batch_size=MAX_BATCH_BYTES,
        linger_ms=5,
        client_id="bench-publish",
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, m.value, key=m.key, headers=m.headers) for m in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
