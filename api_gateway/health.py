"""Operator endpoints: liveness and readiness probes, Prometheus metrics."""

from __future__ import annotations

import asyncio

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from billing_fleet.db import database_answers
from billing_fleet.http_server import PROBE_TIMEOUT_SECONDS
from billing_fleet.readiness import record_checks

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _database_ok(request: Request) -> bool:
    pool: asyncpg.Pool | None = request.app.state.db_pool
    if pool is None:
        return False
    # Bounded like the read API.
    return await database_answers(pool, request.app.state.settings.gateway_database_timeout_seconds)


@router.get("/readyz", summary="Readiness: the broker and the database are reachable")
async def readyz(request: Request) -> JSONResponse:
    kafka, database = await asyncio.gather(
        request.app.state.publisher.ping(PROBE_TIMEOUT_SECONDS),
        _database_ok(request),
    )
    record_checks({"kafka": kafka, "database": database})
    checks = {
        "kafka": "ok" if kafka else "unreachable",
        "database": "ok" if database else "unreachable",
    }
    ready = kafka and database
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
