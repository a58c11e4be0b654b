"""The gateway application: routes, lifespan-owned resources, and its servers.

The public port serves the webhook, the read API and the probes. With
``BILLING_GATEWAY_ADMIN_PORT`` set, ``/metrics``, ``/docs``, ``/openapi.json`` and
``/asyncapi.json`` move to that port (404 on the public one): two uvicorn servers in one
process and event loop, in front of the same app (one publisher, one pool, one metrics
registry). The probes answer on both: the chart probes the public port, so a wedged
public listener fails its probe, which an admin-port probe would not notice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI, Request, Response
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway import access, health, ledger, webhooks
from api_gateway.auth import TokenVerifier
from api_gateway.docs import DOCS_PATH, install_docs
from api_gateway.guard import ROUTE, guarded
from api_gateway.metrics import WEBHOOKS_RECEIVED
from api_gateway.problems import install_problem_handlers, problem
from api_gateway.publisher import EventPublisher
from api_gateway.settings import GatewaySettings
from billing_fleet.db import close_pool, create_pool
from billing_fleet.http_server import (
    SignalFreeServer,
    bind_socket,
    server_config,
)

# Read API queries are short; more connections than cores keeps them from queueing.
DB_POOL_SIZE = 16
ROUTERS = (webhooks.router, health.router, access.router, ledger.router)
# The read API's fast paths, in order; each answers None for a path not its own.
FAST_READS = (access.serve_fast, ledger.serve_fast)


def create_app(
    settings: GatewaySettings, *, asyncapi_brokers: Sequence[KafkaBroker] = ()
) -> FastAPI:
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
                # Bounded: uvicorn's lifespan shutdown has no timeout of its own.
                await close_pool(pool, settings.gateway_database_timeout_seconds)

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
    app.state.db_pool = None  # until the lifespan opens it (the admin port may answer first)
    # No network here: a JWKS is fetched on the first RS256 token, then cached.
    app.state.token_verifier = TokenVerifier.from_settings(settings)
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
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

    ``POST /webhooks/stripe`` and the read API's GETs (entitlements, ledger): those layers
    cost 3-4x the handlers themselves at their rates (bench/ingress, bench/e2e). The same
    handler functions run; the routes stay registered on ``app`` for OpenAPI and for
    everything else. What every route needs is not here but in the edge in front of both
    (``guard.py``): a fast path only names its route (``ROUTE``) and may raise
    ``HTTPException``.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = app
            request = Request(scope, receive)
            response: Response | None = None
            if scope["method"] == "POST" and scope["path"] == webhooks.WEBHOOK_PATH:
                scope[ROUTE] = webhooks.WEBHOOK_PATH
                response = await webhooks.receive_stripe_webhook(request)
            else:
                for serve_fast in FAST_READS:
                    response = await serve_fast(request)
                    if response is not None:
                        break
            if response is not None:
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


ADMIN_PATHS = frozenset({"/metrics", "/openapi.json", "/asyncapi.json", DOCS_PATH})
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


def is_admin_path(path: str) -> bool:
    return path in ADMIN_PATHS or path.startswith(DOCS_PATH + "/")


def _serving_only(app: ASGIApp, serves: Callable[[str], bool]) -> ASGIApp:
    """``app`` for the paths ``serves`` accepts; the others are 404, as unknown routes are."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not serves(scope["path"]):
            await problem(404, "Not Found")(scope, receive, send)
            return
        await app(scope, receive, send)

    return asgi


def route_finder(app: FastAPI) -> Callable[[Scope], str | None]:
    """The template of the route a request would take (the path matching, when only the
    method does not), for requests the edge answers before any route ran."""
    # The routers' own routes: how FastAPI keeps included routers varies by version.
    routes = [r for r in app.router.routes if isinstance(getattr(r, "path", None), str)]
    routes += [route for router in ROUTERS for route in router.routes]

    def route_of(scope: Scope) -> str | None:
        partial: str | None = None
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", None)
            if match is Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return partial

    return route_of


def _count_too_large(route: str) -> None:
    # The webhook's own series keeps counting its refused bodies, as before the edge.
    if route == webhooks.WEBHOOK_PATH:
        WEBHOOKS_RECEIVED.labels("unknown", "too_large").inc()


def edge(app: FastAPI, served: ASGIApp) -> ASGIApp:
    """``served`` (``app``, its fast paths, or a part of them) behind the edge."""
    settings: GatewaySettings = app.state.settings
    return guarded(
        served,
        max_body_bytes=settings.webhook_max_body_bytes,
        route_of=route_finder(app),
        on_too_large=_count_too_large,
    )


def public_asgi(app: FastAPI, settings: GatewaySettings, *, fast_paths: bool = True) -> ASGIApp:
    """What the public port serves: everything, or all but the admin paths when they have
    their own port. The edge is outermost, in front of the fast paths and of FastAPI."""
    served: ASGIApp = with_fast_paths(app) if fast_paths else app
    if settings.gateway_admin_port is not None:
        served = _serving_only(served, lambda path: not is_admin_path(path))
    return edge(app, served)


def admin_asgi(app: FastAPI) -> ASGIApp:
    """What the admin port serves: the admin paths and the probes (FastAPI's routes)."""
    return edge(app, _serving_only(app, lambda path: is_admin_path(path) or path in PROBE_PATHS))


class _PublicServer(uvicorn.Server):
    """Takes SIGINT/SIGTERM as uvicorn does, and stops the admin server with it."""

    def __init__(self, config: uvicorn.Config, admin: uvicorn.Server | None) -> None:
        super().__init__(config)
        self.admin = admin

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.admin is not None:
            self.admin.should_exit = True


class GatewayServers:
    """The public server (it runs the app's lifespan and takes the signals) and, with an
    admin port, the admin server (no lifespan of its own), on one event loop."""

    def __init__(self, app: FastAPI, settings: GatewaySettings, *, fast_paths: bool = True) -> None:
        limits = settings.server_limits()
        host, admin_port = settings.gateway_host, settings.gateway_admin_port
        self.admin: uvicorn.Server | None = None
        if admin_port is not None:
            admin = server_config(admin_asgi(app), host, admin_port, limits, lifespan="off")
            self.admin = SignalFreeServer(admin)
        public = public_asgi(app, settings, fast_paths=fast_paths)
        self.public = _PublicServer(
            server_config(public, host, settings.gateway_port, limits), self.admin
        )

    @property
    def started(self) -> bool:
        return self.public.started and (self.admin is None or self.admin.started)

    def stop(self) -> None:
        """What a signal does: the public server drains its requests, the admin one stops."""
        self.public.should_exit = True
        if self.admin is not None:
            self.admin.should_exit = True

    async def run(self) -> None:
        """Serve until stopped (SIGINT/SIGTERM, or ``stop``). The admin port is bound
        first, so a taken one stops the start (exit 3, as a taken public port does) before
        anything serves; until the lifespan has opened the broker and the pool, /readyz
        on the admin port says not ready."""
        admin_task = None
        if self.admin is not None:
            sockets = [bind_socket(self.admin.config)]
            admin_task = asyncio.create_task(self.admin.serve(sockets), name="gateway-admin")
        try:
            await self.public.serve()
        finally:
            if self.admin is not None and admin_task is not None:
                self.admin.should_exit = True
                await admin_task


async def serve(settings: GatewaySettings, *, asyncapi_brokers: Sequence[KafkaBroker] = ()) -> None:
    """Run the gateway until SIGINT/SIGTERM (uvicorn drains in-flight requests first);
    ``asyncapi_brokers``: the workers' topics, when they run in the same process (dev)."""
    app = create_app(settings, asyncapi_brokers=asyncapi_brokers)
    await GatewayServers(app, settings).run()
