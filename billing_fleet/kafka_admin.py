"""Topic creation and a broker probe, both through aiokafka's admin client, and starting
a FastStream broker behind that probe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from billing_fleet.kafka_security import PLAINTEXT, KafkaSecurity

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker


class KafkaAdminError(RuntimeError):
    """The broker refused or could not be asked (unreachable, invalid topic, ...)."""


async def broker_reachable(
    bootstrap: str, timeout: float, security: KafkaSecurity = PLAINTEXT
) -> bool:
    """True if the cluster answers a bootstrap (ApiVersions + Metadata) within ``timeout``.

    A port that merely accepts TCP, or a broker still starting, is not reachable.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1, int(timeout * 1000)),
        **security.client_kwargs(),
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return True


async def connect_when_reachable(
    broker: KafkaBroker,
    bootstrap: str,
    timeout: float,
    *,
    subscribers: bool = False,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """``broker.connect()`` (``start()`` with ``subscribers``), once the cluster answers
    ``broker_reachable``; raises KafkaConnectionError before that. On a failure whatever
    did start is stopped again, so the caller may simply retry.

    Retrying FastStream's connect while Kafka is down leaks: each attempt makes a new
    aiokafka producer and drops it unclosed when it cannot start (asyncio logs "Unclosed
    AIOKafkaProducer" for each one), and a half-started admin client stays in the broker.
    The probe closes what it opens; only a cluster lost between probe and connect can
    still leave one producer behind.
    """
    if not await broker_reachable(bootstrap, timeout, security):
        raise KafkaConnectionError(f"no Kafka cluster answers at {bootstrap}")
    try:
        await (broker.start() if subscribers else broker.connect())
    except Exception:
        with contextlib.suppress(Exception):
            await broker.stop()
        raise


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    replication_factor: int,
    security: KafkaSecurity = PLAINTEXT,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones this call created.

    Existing topics are left as they are (their partition count is not changed).
    """
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.client_kwargs())
    try:
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, partitions, replication_factor) for name in wanted]
            )
        finally:
            await admin.close()
    except KafkaError as exc:
        raise KafkaAdminError(f"cannot create topics on {bootstrap}: {exc!r}") from exc
    created: list[str] = []
    # Errors come back per topic, not raised: "already exists" is the idempotent case.
    for name, code, *rest in response.topic_errors:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:
            detail = rest[0] if rest and rest[0] else f"error code {code}"
            raise KafkaAdminError(f"cannot create topic {name!r}: {detail}")
    return created


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (empty if it does not exist), in order.

    A consumer that subscribed to nothing knows no topics yet: refresh its metadata once.
    """
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_all(bootstrap: str, topic: str, security: KafkaSecurity = PLAINTEXT) -> list[Any]:
    """Every record of ``topic`` now (aiokafka ``ConsumerRecord``s), by partition and offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **security.client_kwargs()
    )
    try:
        await consumer.start()  # inside: a consumer that failed to start is closed too
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        found: list[Any] = []
        # Until the end offsets are passed and a fetch comes back empty: some brokers
        # (Tansu) report the end offset of the last record batch, not of the last record.
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=300)
            for records in batch.values():
                found.extend(records)
            behind = [tp for tp in tps if await consumer.position(tp) < end[tp]]
            if not batch and not behind:
                break
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()
