"""PostgreSQL connection pools (asyncpg)."""

from __future__ import annotations

import asyncpg


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool on ``url`` (any libpq URL asyncpg accepts, unix-socket ``?host=`` included)."""
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
