"""A real gateway (uvicorn on loopback) on the session's broker and database, and topic reads."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI

from api_gateway.app import GatewayServers, create_app
from billing_fleet.kafka_admin import ensure_topics, read_all
from contracts import BILLING_EVENTS, event_id_for
from tests.fleet_settings import FleetSettings
from tests.jwt_tokens import AUDIENCE, HS256_SECRET, ISSUER
from tests.stripe_fixtures import PRIMARY_SECRET, SECONDARY_SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Gateway:
    url: str
    settings: FleetSettings


@pytest.fixture(scope="session")
async def gateway(kafka: Any, database_url: str) -> AsyncIterator[Gateway]:
    settings = FleetSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        stripe_webhook_secrets=[PRIMARY_SECRET, SECONDARY_SECRET],
        kafka_publish_timeout_seconds=2,
        webhook_max_body_bytes=64 * 1024,
        gateway_port=free_port(),
        # The read API on HS256 (tests/jwt_tokens.py signs); RS256 tests run their own gateway.
        jwt_hs256_secret=HS256_SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    await create_topics(settings)
    async with serve_gateway(settings) as app:
        assert await app.state.publisher.wait_connected(10), "gateway never reached Kafka"
        yield Gateway(f"http://127.0.0.1:{settings.gateway_port}", settings)


@asynccontextmanager
async def serve_gateway(
    settings: FleetSettings, *, fast_paths: bool = True
) -> AsyncIterator[FastAPI]:
    """The gateway on ``settings.gateway_port`` (and its admin port, if set), served as
    `billing-fleet gateway` serves it, on 127.0.0.1 (``fast_paths=False``: FastAPI alone
    answers every route, to compare the two)."""
    app, servers, task = await start_gateway(settings, fast_paths=fast_paths)
    try:
        yield app
    finally:
        servers.stop()
        await task


async def start_gateway(
    settings: FleetSettings, *, fast_paths: bool = True
) -> tuple[FastAPI, GatewayServers, asyncio.Task[None]]:
    """The gateway serving (on 127.0.0.1), its servers and the task running them, for a
    test that stops it itself (``servers.stop()``, then the task ends)."""
    settings = settings.model_copy(update={"gateway_host": "127.0.0.1"})
    app = create_app(settings)
    servers = GatewayServers(app, settings, fast_paths=fast_paths)
    task = asyncio.create_task(servers.run())
    while not servers.started:  # uvicorn offers a flag, not an event
        if task.done():
            task.result()  # startup failed: raise its error, else say so
            raise RuntimeError("the gateway stopped during startup")
        await asyncio.sleep(0.02)
    return app, servers, task


async def create_topics(settings: FleetSettings) -> None:
    """The topics as ``dev`` and the chart create them (Tansu forgets them on restart)."""
    assert settings.kafka_bootstrap_servers
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        [BILLING_EVENTS],
        settings.kafka_topic_partitions,
        settings.kafka_topic_replication_factor,
    )


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record on ``topic`` right now."""
    return await read_all(bootstrap, topic)


def records_for(records: list[Any], stripe_event_id: str) -> list[Any]:
    """The records carrying the normalized form of one Stripe event."""
    ce_id = str(event_id_for(stripe_event_id)).encode()
    return [r for r in records if dict(r.headers).get("ce_id") == ce_id]
