"""Kafka over TLS (mutual): a loopback TLS-terminating proxy in front of a Tansu started for
this test, which advertises the proxy's address, so every connection a client makes (the
bootstrap and then the advertised broker) goes through TLS. The admin client, a plain
producer, the gateway's publisher and a consumer all use the settings' security."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from api_gateway.publisher import EventPublisher
from billing_fleet.kafka_admin import broker_reachable, ensure_topics, read_all
from billing_fleet.kafka_security import KafkaSecurity, kafka_security
from billing_fleet.settings import CoreSettings
from fleet.embedded import EmbeddedKafka, free_port
from tests.tls_certs import Pki, make_pki

TOPIC = "tls.check.v1"


@dataclass
class TlsKafka:
    bootstrap: str
    pki: Pki
    connections: list[int]  # one entry per TLS connection the proxy accepted


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@pytest_asyncio.fixture(loop_scope="session")
async def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsKafka]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    server_context.load_cert_chain(pki.server_cert, pki.server_key)
    server_context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: clients show a certificate
    proxy_port = free_port()
    connections: list[int] = []
    with EmbeddedKafka(advertised=f"127.0.0.1:{proxy_port}") as tansu:

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            async with asyncio.timeout(10):
                up_reader, up_writer = await asyncio.open_connection(tansu.host, tansu.port)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        proxy = await asyncio.start_server(forward, "127.0.0.1", proxy_port, ssl=server_context)
        try:
            yield TlsKafka(f"127.0.0.1:{proxy_port}", pki, connections)
        finally:
            proxy.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await proxy.wait_closed()


@pytest.fixture
def tls_settings(monkeypatch: pytest.MonkeyPatch, tls_kafka: TlsKafka) -> CoreSettings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", tls_kafka.bootstrap)
    monkeypatch.setenv("BILLING_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("BILLING_KAFKA_SSL_CAFILE", str(tls_kafka.pki.ca))
    monkeypatch.setenv("BILLING_KAFKA_SSL_CERTFILE", str(tls_kafka.pki.client_cert))
    monkeypatch.setenv("BILLING_KAFKA_SSL_KEYFILE", str(tls_kafka.pki.client_key))
    return CoreSettings()


async def test_clients_publish_and_read_through_tls(
    tls_kafka: TlsKafka, tls_settings: CoreSettings
) -> None:
    security = kafka_security(tls_settings)
    bootstrap = tls_kafka.bootstrap
    # Plaintext to a TLS port gets no Kafka answer: the clients below really use TLS.
    assert not await broker_reachable(bootstrap, 3)
    assert await broker_reachable(bootstrap, 10, security)
    await ensure_topics(bootstrap, [TOPIC, "billing.events.v1"], 1, 1, security)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **security.client_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"over tls", key=b"k")
    finally:
        await producer.stop()

    publisher = EventPublisher(tls_settings)
    await publisher.start()
    try:
        assert await publisher.wait_connected(15)
        await publisher.publish(b"gateway over tls", key="cus_1", headers={"ce_id": "evt_1"})
    finally:
        await publisher.close()

    assert [r.value for r in await read_all(bootstrap, TOPIC, security)] == [b"over tls"]
    events = await read_all(bootstrap, "billing.events.v1", security)
    assert [r.value for r in events] == [b"gateway over tls"]
    assert tls_kafka.connections  # every byte went through the proxy's TLS


async def test_a_client_without_the_ca_does_not_connect(tls_kafka: TlsKafka) -> None:
    untrusting = KafkaSecurity(protocol="SSL", ssl_context=ssl.create_default_context())
    assert not await broker_reachable(tls_kafka.bootstrap, 3, untrusting)
