"""``billing_dependency_up{dependency}`` on a real gateway: each GET /readyz sets it, and
GET /metrics then reads 0 for the dependency that check could not reach, 1 for the others."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet.embedded import EmbeddedKafka
from tests.fleet_settings import FleetSettings
from tests.gateway import free_port, serve_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka_later() -> Iterator[EmbeddedKafka]:
    """A broker with its port chosen but not started: Kafka is down until ``start()``."""
    broker = EmbeddedKafka()
    try:
        yield broker
    finally:
        broker.stop()


async def readyz_then_gauge(url: str) -> tuple[int, dict[str, float]]:
    """/readyz's status, then the gauge per dependency as /metrics reads right after."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        status = (await client.get("/readyz")).status_code
        text = (await client.get("/metrics")).text
    gauge = {
        sample.labels["dependency"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "billing_dependency_up"
        for sample in family.samples
    }
    return status, gauge


async def test_gauge_reads_kafka_0_while_the_broker_is_down_and_1_once_it_is_up(
    settings: FleetSettings, kafka_later: EmbeddedKafka
) -> None:
    gateway_settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_later.bootstrap_servers,
            "kafka_publish_timeout_seconds": 1.0,
            "gateway_port": free_port(),
        }
    )
    url = f"http://127.0.0.1:{gateway_settings.gateway_port}"
    async with serve_gateway(gateway_settings) as app:
        down = await readyz_then_gauge(url)
        kafka_later.start()
        assert await app.state.publisher.wait_connected(15)
        # Bounded wait for the first check that reaches the new broker.
        deadline = time.monotonic() + 30
        up = await readyz_then_gauge(url)
        while up[0] != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            up = await readyz_then_gauge(url)

    assert down == (503, {"kafka": 0.0, "database": 1.0})
    assert up == (200, {"kafka": 1.0, "database": 1.0})


async def test_gauge_reads_database_0_when_postgresql_is_unreachable(
    settings: FleetSettings,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"postgresql://billing@127.0.0.1:{sock.getsockname()[1]}/billing"
    gateway_settings = settings.model_copy(
        update={"database_url": dead, "gateway_port": free_port()}
    )
    async with serve_gateway(gateway_settings):
        result = await readyz_then_gauge(f"http://127.0.0.1:{gateway_settings.gateway_port}")

    assert result == (503, {"kafka": 1.0, "database": 0.0})
