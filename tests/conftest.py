"""Shared fixtures: the real Kafka-protocol broker and fresh PostgreSQL databases.

- ``kafka`` (session): ``.bootstrap_servers``, ``.stop()``, ``.start()``. The embedded Tansu
  broker on a free port, or the broker named by ``KAFKA_BOOTSTRAP_SERVERS`` (then ``stop``
  and ``start`` skip the test: we do not stop someone else's broker). Tansu keeps
  everything in memory: after ``stop()``/``start()`` it is empty, on the same port. A test
  that stops it must restart it in a ``finally``.
- ``create_database`` (session): ``await create_database(migrated=False) -> url`` of a new
  empty database ``billing_test_<hex>``, dropped at the end of the session.
- ``database_url`` (session): one fresh, migrated database for the whole session.
- ``settings`` (function): ``FleetSettings`` on the two above, webhook secrets
  ``whsec_test_primary`` and ``whsec_test_secondary``, publish timeout 2 s.
- ``kafka_messages`` (function): ``await read(topic, *, expect, timeout=10)``, see below.

Databases live on the server named by ``DATABASE_URL``, else on an embedded PostgreSQL
started under the session's tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from billing_fleet.migrate import migrate
from fleet.embedded import EmbeddedKafka, EmbeddedPostgres
from tests.fleet_settings import FleetSettings
from workers.registry import migration_packages

# The `gateway` fixture (a real uvicorn gateway on the fixtures below) and the invoice
# worker's `ledger_url` / `ledger_conn` live with their helpers.
pytest_plugins = ("tests.gateway", "tests.invoice_support")

TEST_WEBHOOK_SECRETS = ["whsec_test_primary", "whsec_test_secondary"]


class KafkaServer(Protocol):
    @property
    def bootstrap_servers(self) -> str: ...

    def stop(self) -> None: ...

    def start(self) -> Any: ...


class ExternalKafka:
    """A broker we did not start: usable, but not ours to stop."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def stop(self) -> None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external broker; this test stops it")

    def start(self) -> None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external broker; this test restarts it")


class CreateDatabase(Protocol):
    def __call__(self, *, migrated: bool = False) -> Awaitable[str]: ...


class ReadMessages(Protocol):
    def __call__(
        self,
        topic: str,
        *,
        expect: int,
        timeout: float = 10.0,
        settle: float = 0.3,
        bootstrap_servers: str | None = None,
    ) -> Awaitable[list[Any]]: ...


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (host, port, socket ``?host=`` kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield ExternalKafka(external)
        return
    with EmbeddedKafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the server tests create their databases on (not itself used for tests)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    data_dir = tmp_path_factory.mktemp("postgres") / "pgdata"
    with EmbeddedPostgres(data_dir, delete_on_stop=True) as server:
        yield server.url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def create_database(postgres_server_url: str) -> AsyncIterator[CreateDatabase]:
    created: list[str] = []

    async def create(*, migrated: bool = False) -> str:
        name = f"billing_test_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(postgres_server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        url = with_database(postgres_server_url, name)
        if migrated:
            await migrate(url, migration_packages())
        return url

    yield create
    if created:
        conn = await asyncpg.connect(postgres_server_url)
        try:
            for name in created:
                # FORCE: a subprocess under test may still hold a connection.
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(create_database: CreateDatabase) -> str:
    return await create_database(migrated=True)


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the session's migrated database, closed after the test."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def settings(kafka: KafkaServer, database_url: str) -> FleetSettings:
    return FleetSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        stripe_webhook_secrets=TEST_WEBHOOK_SECRETS,
        kafka_publish_timeout_seconds=2,
    )


@pytest.fixture
def kafka_messages(kafka: KafkaServer) -> ReadMessages:
    """``read(topic, *, expect, timeout=10)``: the records of ``topic`` from its beginning.

    Returns once ``expect`` records arrived plus ``settle`` seconds (so a duplicate shows
    up in "exactly one" assertions), or at ``timeout`` with whatever arrived. ``expect=0``
    waits the whole ``timeout``: use it, with a short timeout, to prove absence.
    Records are aiokafka ``ConsumerRecord`` in arrival order.
    """

    async def read(
        topic: str,
        *,
        expect: int,
        timeout: float = 10.0,
        settle: float = 0.3,
        bootstrap_servers: str | None = None,
    ) -> list[Any]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers or kafka.bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=500,  # notice a topic created while we wait
        )
        await consumer.start()
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settling = False
        try:
            while (remaining := deadline - loop.time()) > 0:
                batch = await consumer.getmany(timeout_ms=int(min(remaining, 0.2) * 1000) + 1)
                for partition_records in batch.values():
                    records.extend(partition_records)
                if expect and len(records) >= expect and not settling:
                    settling, deadline = True, min(deadline, loop.time() + settle)
        finally:
            await consumer.stop()
        return records

    return read
