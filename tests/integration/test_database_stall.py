"""A stalled PostgreSQL: its processes frozen with SIGSTOP (not stopped), then SIGCONT.

A frozen server keeps its sockets open and answers nothing, so only our own deadlines end
a wait on it. These tests run their own embedded PostgreSQL (freezing the session's
would stall every other test) and always thaw it in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from billing_fleet.db import BoundedPool, bounded_transaction, create_pool
from billing_fleet.embedded import EmbeddedPostgres
from billing_fleet.migrate import migrate
from tests.runtime_toy import (
    prepare_tables,
    unique,
)

pytestmark = pytest.mark.integration

GATEWAY_BOUND = 1.0
WORKER_BOUND = 1.5
# Scheduling slack on a loaded 2-core machine; far below what a hang would take.
MARGIN = 1.5
# The client gives up long after the bound, so a hang shows as a failure, not a wait.
CLIENT_TIMEOUT = 8.0


class StallablePostgres:
    """An embedded PostgreSQL whose processes can be frozen (SIGSTOP) and thawed."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def _processes(self) -> list[psutil.Process]:
        pid = int((self.server.data_dir / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The postmaster first (it forks no new backend then), then every child."""
        stopped: list[psutil.Process] = []
        try:
            for process in self._processes():
                process.send_signal(signal.SIGSTOP)
                stopped.append(process)
            yield
        finally:
            for process in {*stopped, *self._processes()}:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
async def stallable(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StallablePostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("stall") / "pgdata", delete_on_stop=True)
    await asyncio.to_thread(server.start)
    try:
        await migrate(server.url)
        await prepare_tables(server.url)
        yield StallablePostgres(server)
    finally:
        await asyncio.to_thread(server.stop)


async def timed(request: Any) -> tuple[httpx.Response, float]:
    """The awaited response and how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await request
    return response, loop.time() - started


# -- the helper ----------------------------------------------------------------------------


async def test_bounded_connection_abandons_a_connection_on_the_deadline(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=2)
    db = BoundedPool(pool, GATEWAY_BOUND)
    try:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        loop = asyncio.get_running_loop()
        with stallable.frozen():
            for _ in range(3):  # the pooled connection, then two connects to the postmaster
                started = loop.time()
                with pytest.raises(TimeoutError):
                    await db.fetchval("SELECT 1")
                assert loop.time() - started < GATEWAY_BOUND + MARGIN
        # Not handed back mid-query: every holder is free again and connects afresh.
        pids = await asyncio.gather(*(db.fetchval("SELECT pg_backend_pid()") for _ in range(2)))
        assert backend not in pids
    finally:
        pool.terminate()


async def test_a_statement_the_server_refuses_keeps_the_connection(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=1)
    db = BoundedPool(pool, GATEWAY_BOUND)
    try:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await db.fetchval("SELECT 1 / 0")
        with pytest.raises(asyncpg.UndefinedTableError):
            async with bounded_transaction(pool, GATEWAY_BOUND) as conn:
                await conn.execute("SELECT * FROM no_such_table")
        assert await db.fetchval("SELECT pg_backend_pid()") == backend
    finally:
        await pool.close()


async def test_a_callers_own_cancellation_stays_a_cancellation(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=1)
    db = BoundedPool(pool, 30.0)
    try:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        with stallable.frozen():
            query = asyncio.create_task(db.fetchval("SELECT 1"))
            await asyncio.sleep(0.2)
            query.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(query, MARGIN)
        assert await db.fetchval("SELECT pg_backend_pid()") != backend  # abandoned too
    finally:
        pool.terminate()


async def test_bounded_transaction_rolls_back_on_error_and_on_the_deadline(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=1)
    first, second = unique("evt"), unique("evt")
    insert = "INSERT INTO processed_events (consumer, event_id) VALUES ('stall', $1)"
    try:
        with pytest.raises(ZeroDivisionError):
            async with bounded_transaction(pool, WORKER_BOUND) as conn:
                await conn.execute(insert, first)
                _ = 1 / 0
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with bounded_transaction(pool, WORKER_BOUND) as conn:
                await conn.execute(insert, second)
                with stallable.frozen():
                    started = loop.time()
                    try:
                        await conn.execute("SELECT 1")  # the COMMIT never comes
                    finally:
                        took = loop.time() - started
        assert took < WORKER_BOUND + MARGIN
        db = BoundedPool(pool, WORKER_BOUND)
        kept = await db.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = ANY($1::text[])",
            [first, second],
        )
        assert kept == 0
    finally:
        pool.terminate()
