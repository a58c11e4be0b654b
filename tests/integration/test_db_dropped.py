"""A connection the server drops mid-statement (pg_terminate_backend, as a failover does).

asyncpg then hands the connection back to the pool by itself and detaches the proxy the
block holds; leaving ``bounded_connection`` or ``bounded_transaction`` must neither fail
on that proxy nor replace the block's own error (the one that says what happened).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import asyncpg
import pytest

from billing_fleet.db import bounded_connection, bounded_transaction, create_pool

pytestmark = pytest.mark.integration

Block = Callable[[asyncpg.Pool, float], AbstractAsyncContextManager[asyncpg.Connection]]
BLOCKS: dict[str, Block] = {"connection": bounded_connection, "transaction": bounded_transaction}


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def terminate_while_sleeping(admin: asyncpg.Connection, pid: int) -> None:
    """Terminate backend ``pid`` once it runs ``pg_sleep`` (so a statement is in flight)."""
    async with asyncio.timeout(10):
        while not await admin.fetchval(  # noqa: ASYNC110 - polling the server, no event
            "SELECT count(*) > 0 FROM pg_stat_activity"
            " WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
            pid,
        ):
            await asyncio.sleep(0.01)
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)


@pytest.mark.parametrize("attempt", range(5))  # the client sees the error and the EOF in
@pytest.mark.parametrize("kind", sorted(BLOCKS))  # either order: repeat to meet both
async def test_a_dropped_connection_keeps_the_blocks_own_error(
    database_url: str, admin: asyncpg.Connection, kind: str, attempt: int
) -> None:
    block = BLOCKS[kind]
    pool = await create_pool(database_url, min_size=0, max_size=1)
    seen: list[BaseException] = []
    try:
        with pytest.raises(Exception) as raised:  # the block's own, below
            async with block(pool, 10.0) as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                killer = asyncio.create_task(terminate_while_sleeping(admin, pid))
                try:
                    await conn.execute("SELECT pg_sleep(30)")
                except Exception as exc:
                    seen.append(exc)
                    raise
                finally:
                    await killer
        assert seen, "the statement was not interrupted"
        assert raised.value is seen[0], f"{raised.value!r} replaced {seen[0]!r}"
        assert "released back to the pool" not in str(raised.value)
        # The pool replaces the dropped connection.
        async with block(pool, 5.0) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        pool.terminate()


class HandlerBug(Exception):
    pass


@pytest.mark.parametrize("noticed", [True, False], ids=["drop noticed", "drop in flight"])
@pytest.mark.parametrize("kind", [*sorted(BLOCKS), "connection with BEGIN"])
async def test_an_error_of_the_block_is_kept_when_the_server_dropped_its_connection(
    database_url: str, admin: asyncpg.Connection, kind: str, noticed: bool
) -> None:
    """The block fails on its own (a handler's bug) after the server dropped its
    connection: once asyncpg noticed (the proxy is detached), or while the drop is still
    on its way (the ROLLBACK on leaving, ours or the pool's, meets it)."""
    block = BLOCKS[kind.removesuffix(" with BEGIN")]
    pool = await create_pool(database_url, min_size=0, max_size=1)
    try:
        with pytest.raises(HandlerBug):
            async with block(pool, 10.0) as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await conn.execute("BEGIN" if kind.endswith("BEGIN") else "SELECT 1")
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                if noticed:
                    async with asyncio.timeout(10):
                        while not _detached(conn):  # noqa: ASYNC110 - asyncpg has no event
                            await asyncio.sleep(0.01)
                raise HandlerBug
        if noticed:  # (a connection dropped unnoticed fails its next user: asyncpg's doing)
            async with block(pool, 5.0) as conn:
                assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        pool.terminate()


def _detached(conn: asyncpg.Connection) -> bool:
    try:
        conn.is_closed()
    except asyncpg.InterfaceError:
        return True  # "released back to the pool"
    return False
