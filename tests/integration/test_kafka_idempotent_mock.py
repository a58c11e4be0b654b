"""The production producer settings (BILLING_KAFKA_ENABLE_IDEMPOTENCE=true) against a broker
that implements idempotence: the librdkafka mock cluster inside the confluent-kafka wheel
(Tansu does not). The gateway's publisher and the outbox relay (its producer and sender,
rows from PostgreSQL) publish; the records are read back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from api_gateway.publisher import EventPublisher
from billing_fleet.db import bounded_transaction, create_pool
from billing_fleet.kafka_admin import read_all
from billing_fleet.settings import CoreSettings
from workers.runtime.outbox import OutboxRelay, write_outbox
from workers.runtime.relay_sender import BatchSender
from workers.runtime.run import relay_producer
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import Outgoing


def _producer_id(producer: Any) -> int:
    """The producer id the cluster assigned (InitProducerId): only an idempotent aiokafka
    producer has a transaction manager that holds one."""
    manager = producer._txn_manager
    assert manager is not None, "the producer is not idempotent"
    await_id: int = manager.producer_id
    return await_id


def _aiokafka_producer(publisher: EventPublisher) -> Any:
    state: Any = publisher.broker.config.producer
    return state._producer.producer


@pytest.fixture
def mock_cluster() -> Iterator[str]:
    """The bootstrap address of a 3-broker mock cluster, alive while the test runs."""
    owner = Producer({"test.mock.num.brokers": 3, "log_level": 3})
    brokers = owner.list_topics(timeout=10).brokers.values()
    yield ",".join(f"{b.host}:{b.port}" for b in sorted(brokers, key=lambda b: b.id))
    owner.flush(5)
    del owner  # the cluster goes with its owner


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch, mock_cluster: str) -> str:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", mock_cluster)
    monkeypatch.setenv("BILLING_KAFKA_ENABLE_IDEMPOTENCE", "true")
    return mock_cluster


async def test_gateway_publisher_is_idempotent_on_a_cluster(production_env: str) -> None:
    publisher = EventPublisher(CoreSettings())
    await publisher.start()
    try:
        assert await publisher.wait_connected(15)
        # The cluster gave the gateway's producer an id: it publishes idempotently.
        assert _producer_id(_aiokafka_producer(publisher)) >= 0
        for n in range(5):
            await publisher.publish(
                f"event {n}".encode(), key="cus_1", headers={"ce_id": f"evt_{n}"}
            )
    finally:
        await publisher.close()
    records = await read_all(production_env, "billing.events.v1")
    assert [r.value for r in records] == [f"event {n}".encode() for n in range(5)]
    assert [dict(r.headers)["ce_id"] for r in records] == [f"evt_{n}".encode() for n in range(5)]


async def test_outbox_relay_is_idempotent_on_a_cluster(
    production_env: str, create_database: Any
) -> None:
    """The relay as a worker runs it: outbox rows in PostgreSQL, its producer, its sender."""
    rows = [
        Outgoing("relay.out.v1", f"cus_{n % 3}", f"row {n}".encode(), {"ce_id": f"id{n}"})
        for n in range(9)
    ]
    producer = relay_producer(RuntimeSettings(), "toy")
    pool = await create_pool(await create_database(migrated=True))
    try:
        async with bounded_transaction(pool, 5) as conn:
            await write_outbox(conn, "toy", rows)
        await producer.start()
        relay = OutboxRelay(
            pool, BatchSender(producer).send_all, worker="toy", ack_timeout=10, db_timeout=5
        )
        assert await relay.flush() == len(rows)
        assert _producer_id(producer) >= 0  # the relay's producer is the idempotent one
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await producer.stop()
        await pool.close()
    records = await read_all(production_env, "relay.out.v1")
    assert sorted(r.value for r in records) == sorted(o.value for o in rows)
    # Each key on one partition, in outbox order: what the relay promises.
    by_key: dict[bytes, list[bytes]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r.value)
    assert by_key[b"cus_0"] == [b"row 0", b"row 3", b"row 6"]
