"""What every read route shares: a bounded read of the workers' read views, ready JSON
answers, and the errors OpenAPI documents for them.

Used by the entitlement routes (``access.py``) and the ledger routes (``ledger.py``), on
the fast path and through FastAPI alike.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from fastapi import Request, Response
from pydantic_core import to_json
from starlette.exceptions import HTTPException

from api_gateway.auth import RETRY_AFTER_SECONDS
from billing_fleet.db import DATABASE_UNAVAILABLE, BoundedPool

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, malformed, expired or unverifiable bearer token.", **PROBLEM},
    503: {"description": "Read API not configured, or database/keys unavailable.", **PROBLEM},
}


def json_response(body: dict[str, Any]) -> Response:
    """``body`` as JSON bytes (pydantic-core's encoder: datetimes as ISO 8601)."""
    return encoded_json_response(to_json(body))


def encoded_json_response(body: bytes) -> Response:
    """``body``, JSON already encoded (a page's rows joined, a stored document)."""
    return Response(body, media_type="application/json")


async def read(request: Request, query: Callable[[BoundedPool], Awaitable[T]]) -> T:
    """``query``'s result on the gateway's pool, or HTTPException 503 (with Retry-After)
    when the database is not configured, down, stalled past the gateway's database
    timeout, or lacks the read views."""
    state = request.app.state
    pool: asyncpg.Pool | None = state.db_pool
    if pool is None:
        raise HTTPException(503, "database not configured")
    try:
        # Bounded: a stalled database gives a 503 by the deadline, not a hung request.
        return await query(BoundedPool(pool, state.settings.gateway_database_timeout_seconds))
    except DATABASE_UNAVAILABLE as exc:  # down, stalled or refusing: a 503, not a 500
        raise HTTPException(
            503, "database unavailable", headers={"Retry-After": RETRY_AFTER_SECONDS}
        ) from exc
    except asyncpg.UndefinedTableError as exc:
        # The read views come with the workers' migrations: a gateway started before
        # `billing-fleet migrate` answers 503 until they exist, then recovers.
        log.error("read views missing: run `billing-fleet migrate`", extra={"error": repr(exc)})
        raise HTTPException(
            503,
            "database schema not migrated",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from exc
