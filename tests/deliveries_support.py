"""Helpers of the deliveries tests: rows written as a handler would, and reading them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from billing_fleet.db import create_pool
from workers.runtime.deliveries.channel import Sender
from workers.runtime.deliveries.dispatcher import Dispatcher
from workers.runtime.deliveries.http import HttpSender
from workers.runtime.deliveries.model import Delivery, RetryPolicy
from workers.runtime.deliveries.store import write_deliveries


def http_channel(
    *, backoff: Sequence[float] = (0.1, 0.2), attempts: int = 50, timeout: float = 2.0
) -> HttpSender:
    return HttpSender(RetryPolicy(tuple(backoff), attempts), timeout_seconds=timeout)


async def write(database_url: str, worker: str, deliveries: Sequence[Delivery]) -> int:
    """Insert ``deliveries`` in one transaction, as the runtime does in a handler's."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            return await write_deliveries(conn, worker, deliveries)
    finally:
        await conn.close()


async def rows(database_url: str, worker: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT id, idempotency_key, status, attempts, last_code, last_detail,"
            " next_attempt_at > now() + interval '10 seconds' AS later FROM deliveries"
            " WHERE worker = $1 ORDER BY id",
            worker,
        )
    finally:
        await conn.close()


async def attempts(database_url: str, delivery_id: int) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT attempt, outcome, code, detail FROM delivery_attempts"
            " WHERE delivery_id = $1 ORDER BY id",
            delivery_id,
        )
    finally:
        await conn.close()


async def statuses(database_url: str, worker: str) -> dict[str, str]:
    return {row["idempotency_key"]: row["status"] for row in await rows(database_url, worker)}


@contextlib.asynccontextmanager
async def dispatching(
    database_url: str, worker: str, sender: Sender, *, channel: str = "http", **options: Any
) -> AsyncIterator[Dispatcher]:
    """A dispatcher of ``worker``'s rows over ``sender`` (as ``channel``), running for
    the block."""
    async with dispatching_channels(database_url, worker, {channel: sender}, **options) as found:
        yield found


@contextlib.asynccontextmanager
async def dispatching_channels(
    database_url: str, worker: str, channels: Mapping[str, Sender], **options: Any
) -> AsyncIterator[Dispatcher]:
    """A dispatcher of ``worker``'s rows over several channels, running for the block;
    the senders are closed after it."""
    pool = await create_pool(database_url, max_size=4, connect_timeout=5.0)
    values: dict[str, Any] = {
        "concurrency": 8,
        "lease_seconds": 30.0,
        "db_timeout": 5.0,
        "poll_interval": 0.1,
        **options,
    }
    dispatcher = Dispatcher(pool, channels, worker=worker, **values)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for sender in channels.values():
            await sender.aclose()
        await pool.close()
