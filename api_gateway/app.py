"""The gateway application: routes, lifespan-owned resources, and its server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request, Response
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway import access, health, webhooks
from api_gateway.auth import TokenVerifier
from api_gateway.problems import install_problem_handlers
from api_gateway.publisher import EventPublisher
from billing_fleet.db import create_pool
from billing_fleet.settings import Settings

# Read API queries are short; more connections than cores keeps them from queueing.
DB_POOL_SIZE = 16


def create_app(settings: Settings, *, asyncapi_brokers: Sequence[KafkaBroker] = ()) -> FastAPI:
    """``asyncapi_brokers``: more channels for /asyncapi.json (the workers ``dev`` hosts)."""
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
    )
    app.state.settings, app.state.publisher = settings, publisher
    # No network here: a JWKS is fetched on the first RS256 token, then cached.
    app.state.token_verifier = TokenVerifier.from_settings(settings)
    install_problem_handlers(app)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(access.router)
    asyncapi_json = (
        AsyncAPI(publisher.broker, *asyncapi_brokers, title="billing-fleet gateway", version="1")
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


async def serve(settings: Settings, *, asyncapi_brokers: Sequence[KafkaBroker] = ()) -> None:
    """Run the gateway until SIGINT/SIGTERM (uvicorn drains in-flight requests first)."""
    config = uvicorn.Config(
        with_fast_paths(create_app(settings, asyncapi_brokers=asyncapi_brokers)),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
    )
    await uvicorn.Server(config).serve()
