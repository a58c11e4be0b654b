"""PostgreSQL connection pools (asyncpg), and JSON parameters for ``jsonb`` columns."""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic_core import to_json


async def _keep_session(_: asyncpg.Connection) -> None:
    """Pool reset: nothing to undo. Our code leaves no session state behind (no SET,
    LISTEN or session-level advisory lock; transaction-level ones end with it), and
    asyncpg's default reset would spend a round trip per release on ``RESET ALL; ...``.
    An open transaction is still rolled back: asyncpg does that before calling this."""


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool on ``url`` (any libpq URL asyncpg accepts, unix-socket ``?host=`` included)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, reset=_keep_session
    )
    return pool


def json_text(value: Any) -> str:
    """``value`` as JSON text, for a ``$n::text::jsonb`` parameter: pydantic-core's encoder
    (several times json.dumps' speed; workers write thousands of these per batch)."""
    return to_json(value).decode()
