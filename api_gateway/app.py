"""The gateway application: routes, lifespan-owned resources, and its server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, Response
from faststream.specification import AsyncAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway import access, health, webhooks
from api_gateway.auth import TokenVerifier
from api_gateway.docs import install_docs
from api_gateway.guard import guarded
from api_gateway.problems import install_problem_handlers
from api_gateway.publisher import EventPublisher
from billing_fleet.db import create_pool
from billing_fleet.http_server import ServerLimits, server_config
from billing_fleet.settings import Settings

# Read API queries are short; more connections than cores keeps them from queueing.
DB_POOL_SIZE = 16


def create_app(settings: Settings) -> FastAPI:
    publisher = EventPublisher(settings)  # connects in the lifespan, not here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        # min_size=0: the gateway starts, and reports not ready, while PostgreSQL is down.
        pool = (
            await create_pool(settings.database_url, min_size=0, max_size=DB_POOL_SIZE)
            if settings.database_url
            else None
        )
        app.state.db_pool = pool
        try:
            yield
        finally:
            await publisher.close()
            if pool is not None:
                await pool.close()

    app = FastAPI(
        title="billing-fleet gateway",
        version="1",
        summary="Stripe webhook ingress and billing read API.",
        lifespan=lifespan,
        docs_url=None,  # install_docs: served from the package, no CDN
        redoc_url=None,
        # Starlette's slash redirect builds its Location from the request's Host header.
        redirect_slashes=False,
    )
    app.state.settings, app.state.publisher = settings, publisher
    # No network here: a JWKS is fetched on the first RS256 token, then cached.
    app.state.token_verifier = TokenVerifier.from_settings(settings)
    install_problem_handlers(app)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(access.router)
    install_docs(app)
    asyncapi_json = (
        AsyncAPI(publisher.broker, title="billing-fleet gateway", version="1")
        .to_specification()
        .to_json()
    )

    @app.get("/asyncapi.json", summary="AsyncAPI document of the topics the gateway publishes")
    async def asyncapi() -> Response:
        return Response(asyncapi_json, media_type="application/json")

    return app


def with_fast_paths(app: FastAPI) -> ASGIApp:
    """Serve the hot routes without FastAPI's middleware and dependency layers.

    ``POST /webhooks/stripe`` and the read API's GETs: those layers cost 3-4x the handlers
    themselves at their rates (bench/ingress, bench/e2e). The same handler functions run;
    the routes stay registered on ``app`` for OpenAPI and for everything else.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = app
            request = Request(scope, receive)
            response: Response | None
            if scope["method"] == "POST" and scope["path"] == webhooks.WEBHOOK_PATH:
                response = await webhooks.receive_stripe_webhook(request)
            else:
                response = await access.serve_fast(request)
            if response is not None:
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


def public_asgi(app: FastAPI, *, fast_paths: bool = True) -> ASGIApp:
    """What the gateway port serves. The guard is outermost, in front of the fast paths
    and of FastAPI (``fast_paths=False``: FastAPI alone answers every route)."""
    return guarded(with_fast_paths(app) if fast_paths else app)


def server(app: FastAPI, settings: Settings, *, fast_paths: bool = True) -> uvicorn.Server:
    limits = ServerLimits.from_settings(settings)
    served = public_asgi(app, fast_paths=fast_paths)
    return uvicorn.Server(
        server_config(served, settings.gateway_host, settings.gateway_port, limits)
    )


async def serve(settings: Settings) -> None:
    """Run the gateway until SIGINT/SIGTERM (uvicorn drains in-flight requests first)."""
    await server(create_app(settings), settings).serve()
