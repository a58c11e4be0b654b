"""A worker's operator endpoints: ``/healthz``, ``/readyz``, ``/metrics``, ``/asyncapi.json``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Check = Callable[[], Awaitable[bool]]


def create_app(checks: dict[str, Check], asyncapi_json: str) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        results = await asyncio.gather(*(check() for check in checks.values()))
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


class _Server(uvicorn.Server):
    # The worker's own SIGTERM handling (finish the batch, commit) must see the signal.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="worker-http")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._task.done():
            await self._task  # raises what stopped it (port taken, ...)
            raise OSError("worker HTTP server stopped during startup")

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
