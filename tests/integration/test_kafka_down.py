"""While Kafka is down, the gateway and the workers retry connecting without leaving
unclosed aiokafka producers behind (asyncio logs "Unclosed AIOKafkaProducer" for each)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator

import pytest
from faststream.kafka import KafkaBroker

from billing_fleet.kafka_admin import connect_when_reachable
from fleet.embedded import EmbeddedKafka
from tests.fleet_settings import FleetSettings
from tests.gateway import free_port, serve_gateway
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    prepare_tables,
    publish_events,
    running,
    toy_spec,
    unique,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration

DOWN_SECONDS = 4.0


@pytest.fixture
def kafka_later() -> Iterator[EmbeddedKafka]:
    """A broker with its port chosen but not started: Kafka is down until ``start()``."""
    broker = EmbeddedKafka()
    try:
        yield broker
    finally:
        broker.stop()


def unclosed(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # a dropped producer reports itself when it is collected
    return [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]


def retries(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


async def test_gateway_retrying_while_kafka_is_down_leaks_no_producer(
    settings: FleetSettings, kafka_later: EmbeddedKafka, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    gateway_settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_later.bootstrap_servers,
            "kafka_publish_timeout_seconds": 1.0,
            "gateway_port": free_port(),
        }
    )
    async with serve_gateway(gateway_settings) as app:
        await asyncio.sleep(DOWN_SECONDS)
        down_unclosed = unclosed(caplog)
        kafka_later.start()
        assert await app.state.publisher.wait_connected(15)

    assert retries(caplog, "kafka unreachable, retrying") >= 3
    assert down_unclosed == []
    assert unclosed(caplog) == []


async def test_worker_broker_retrying_while_kafka_is_down_leaks_no_producer(
    kafka_later: EmbeddedKafka, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker's own broker start, as run_worker retries it.
    caplog.set_level(logging.WARNING)
    broker = KafkaBroker(kafka_later.bootstrap_servers, logger=None)
    subscriber = broker.subscriber(unique("down.topic"), group_id=unique("down"))

    @subscriber
    async def handle(body: bytes) -> None:
        pass

    for _ in range(5):
        with pytest.raises(Exception) as failed:
            await connect_when_reachable(
                broker, kafka_later.bootstrap_servers, 1.0, subscribers=True
            )
        assert "KafkaConnectionError" in repr(failed.value)
    down_unclosed = unclosed(caplog)
    kafka_later.start()
    try:
        await connect_when_reachable(broker, kafka_later.bootstrap_servers, 5.0, subscribers=True)
        assert subscriber.running
    finally:
        await broker.stop()

    assert down_unclosed == []
    assert unclosed(caplog) == []


async def test_worker_waits_out_kafka_down_then_applies_and_leaks_nothing(
    settings: FleetSettings, kafka_later: EmbeddedKafka, caplog: pytest.LogCaptureFixture
) -> None:
    assert settings.database_url
    caplog.set_level(logging.WARNING)
    worker = worker_settings(settings, kafka_bootstrap_servers=kafka_later.bootstrap_servers)
    name, topic = unique("toy"), unique("runtime.down")
    await prepare_tables(settings.database_url)
    [event] = make_events(1)

    async with running(toy_spec(name, topic), worker):
        await asyncio.sleep(DOWN_SECONDS)
        down_unclosed = unclosed(caplog)
        kafka_later.start()
        await create_topics(worker, topic)
        await publish_events(kafka_later.bootstrap_servers, topic, [event])
        database_url = settings.database_url

        async def was_applied() -> bool:
            return await applied(database_url, name) == [event.source.stripe_event_id]

        await wait_for(was_applied, timeout=30, message="applied once Kafka is up")

    assert retries(caplog, "unavailable, retrying") >= 2
    assert down_unclosed == []
    assert unclosed(caplog) == []
