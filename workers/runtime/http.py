"""A worker's operator endpoints: ``/healthz``, ``/readyz``, ``/metrics``, ``/asyncapi.json``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billing_fleet.http_server import SignalFreeServer, server_config, start_server
from billing_fleet.readiness import record_checks

Check = Callable[[], Awaitable[bool]]


def create_app(checks: dict[str, Check], asyncapi_json: str) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        results = await asyncio.gather(*(check() for check in checks.values()))
        record_checks(dict(zip(checks, results, strict=True)))
        ready = all(results)
        body = {
            "ready": ready,
            "checks": {
                name: "ok" if ok else "unavailable"
                for name, ok in zip(checks, results, strict=True)
            },
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def asyncapi(request: Request) -> Response:
        return Response(asyncapi_json, media_type="application/json")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/asyncapi.json", asyncapi),
        ]
    )


class HttpServer:
    def __init__(self, app: Starlette, host: str, port: int) -> None:
        # Signal-free: the worker's own SIGTERM handling (finish the batch, commit) must
        # see the signal. Request heads are bounded as on the gateway (default limits).
        self._server = SignalFreeServer(server_config(app, host, port))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = await start_server(self._server, "worker-http")

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
