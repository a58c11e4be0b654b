"""A worker's channels in AsyncAPI documents: the topic it consumes, its dead-letter topic,
and the topics its outbox relay publishes to.

``run_worker`` documents its live broker (the consumer registers the first two itself);
``documentation_broker`` registers the same channels on a broker that is never connected,
for a process that hosts workers without their HTTP endpoints (``billing-fleet dev``,
whose gateway document must list them too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import SkipValidation

from billing_fleet.settings import CoreSettings
from contracts import dead_letter_topic
from contracts.payloads import TOPIC_MODELS
from workers.runtime.spec import Subscription, WorkerSpec

BatchCallback = Callable[[list[Any]], Awaitable[None]]


def documented(subscription: Subscription[Any], callback: BatchCallback) -> BatchCallback:
    """``callback`` annotated with ``subscription``'s contract type: FastStream documents
    the annotation as the channel's payload. ``SkipValidation``: the values are the raw
    records (the consumer parses them itself), the annotation is for the document only."""
    payload: Any = list[SkipValidation[subscription.model]]  # type: ignore[name-defined]
    callback.__annotations__ = {"events": payload, "return": None}
    return callback


def register_emitted(broker: KafkaBroker, spec: WorkerSpec) -> None:
    """Publishers for ``spec.emits``, for the document only: the relay sends through its
    own aiokafka producer, since FastStream's per-message publish cost more than the send."""
    for topic in spec.emits:
        broker.publisher(
            topic,
            title=topic,
            description=f"Emitted by {spec.name} through its transactional outbox.",
            schema=TOPIC_MODELS.get(topic),  # a topic contracts does not know: no schema
        )


def documentation_broker(spec: WorkerSpec, settings: CoreSettings) -> KafkaBroker:
    """Every channel of ``spec``, named as ``run_worker`` names them, on an idle broker
    (on the same servers, so a document merging it with the host's names one server)."""
    broker = KafkaBroker(settings.kafka_bootstrap_servers or "localhost", logger=None)

    for subscription in spec.subscriptions:
        topic, group = subscription.topic, spec.consumer_key(subscription)

        async def consume(events: list[Any]) -> None:  # pragma: no cover
            raise NotImplementedError("a documentation broker is never started")

        broker.subscriber(
            topic,
            batch=True,
            group_id=group,
            title=f"{topic}:{spec.name}",
            description=f"Consumer group {group}: exactly-once effects in PostgreSQL.",
        )(documented(subscription, consume))

        dead_letters = dead_letter_topic(topic, spec.name)
        broker.publisher(
            dead_letters,
            title=dead_letters,
            description="Messages the worker could not process: original bytes, key and "
            "headers, plus dlt_* headers (error, attempts, origin).",
            schema=bytes,
        )
    register_emitted(broker, spec)
    return broker
