"""A toy worker and helpers for the runtime tests (no dependency on a real worker).

The toy records each event it applies in ``toy_applied`` (no unique key: a second apply
would show as a second row), rejects as poison the Stripe event ids (or entitlement change
ids) listed in ``toy_rejects`` (the "catalog"), and emits one Outgoing per billing event
when given a topic. It may consume entitlement changes on a second topic. While a
``toy_down`` row names it, it raises ``ToyServiceDown`` (an outage with ``toy_outage``).
``build`` reads its configuration from ``TOY_*`` variables, for ``billing-fleet worker``
run as a subprocess with ``BILLING_WORKER_DECLARATION=tests.toy_worker:DECLARATION``
(``tests/toy_worker`` declares it, with its tables).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from api_gateway.normalize import normalize
from billing_fleet.kafka_admin import ensure_topics
from billing_fleet.migrate import migrate
from contracts import (
    BillingEvent,
    EntitlementChange,
    cloudevent_headers,
    cloudevent_kafka_headers,
)
from tests import toy_worker
from tests.fleet_settings import FleetSettings
from tests.stripe_fixtures import load_event
from tests.toy_worker import named_as_toy
from workers.runtime.dlt_admin import DeadLetter, read_records
from workers.runtime.run import run_worker
from workers.runtime.spec import (
    OutageCheck,
    Outgoing,
    Poison,
    Subscription,
    WorkerSpec,
    on_entitlement_changes,
)


class ToyServiceDown(Exception):
    """What the toy's (pretend) own dependency raises while a ``toy_down`` row names it."""


def toy_outage(exc: BaseException) -> bool:
    return isinstance(exc, ToyServiceDown)


TOY_SOURCE = "/billing-fleet/toy"
"""The ``ce_source`` of what the toy emits (the producer)."""

FIXTURE = "customer.subscription.created__syncengine__1"


def toy_spec(
    name: str,
    topic: str,
    *,
    out_topic: str | None = None,
    sleep_seconds: float = 0.0,
    changes_topic: str | None = None,
    is_outage: OutageCheck | None = None,
) -> WorkerSpec:
    """Consumes billing events on ``topic`` and, given ``changes_topic``, entitlement
    changes there too (recorded by change id, rejected as poison by it too)."""

    async def apply_one(conn: asyncpg.Connection, event_id: str, type_: str) -> None:
        if await conn.fetchval("SELECT 1 FROM toy_down WHERE consumer = $1", name):
            raise ToyServiceDown(f"{name}'s service is down")
        if await conn.fetchval("SELECT 1 FROM toy_rejects WHERE stripe_event_id = $1", event_id):
            raise Poison(f"{event_id} is not in the catalog")
        await conn.execute(
            "INSERT INTO toy_applied (consumer, stripe_event_id, type) VALUES ($1, $2, $3)",
            name,
            event_id,
            type_,
        )
        if sleep_seconds:
            await asyncio.sleep(sleep_seconds)

    async def handle(conn: asyncpg.Connection, event: BillingEvent) -> Sequence[Outgoing]:
        stripe_id = event.source.stripe_event_id
        await apply_one(conn, stripe_id, event.type)
        if out_topic is None:
            return []
        value = json.dumps({"stripe_event_id": stripe_id}).encode()
        headers = cloudevent_kafka_headers(
            id=f"toy-{stripe_id}",
            type="toy.applied",
            source=TOY_SOURCE,
            time=event.occurred_at,
            subject=event.customer_id,
        )
        return [Outgoing(out_topic, key=event.customer_id or "", value=value, headers=headers)]

    async def handle_change(conn: asyncpg.Connection, change: EntitlementChange) -> list[Outgoing]:
        await apply_one(conn, str(change.id), change.type)
        return []

    subscriptions: list[Subscription[Any]] = [Subscription(topic, handle)]
    if changes_topic is not None:
        subscriptions.append(on_entitlement_changes(handle_change, topic=changes_topic))
    emits = (out_topic,) if out_topic else ()
    return WorkerSpec(name, tuple(subscriptions), emits=emits, is_outage=is_outage)


def build(settings: FleetSettings) -> WorkerSpec:
    out_topic = os.environ.get("TOY_OUT_TOPIC") or None
    return toy_spec(
        os.environ["TOY_NAME"],
        os.environ["TOY_TOPIC"],
        out_topic=out_topic,
        sleep_seconds=float(os.environ.get("TOY_SLEEP_SECONDS", "0")),
        changes_topic=os.environ.get("TOY_CHANGES_TOPIC") or None,
    )


def metric(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_events(count: int, *, customers: int = 3) -> list[BillingEvent]:
    """Real normalized events with fresh Stripe ids, spread over a few customers."""
    events = []
    for i in range(count):
        raw: dict[str, Any] = load_event(FIXTURE)
        raw["data"]["object"]["customer"] = f"cus_toy{i % customers}"
        events.append(normalize(raw))
    return events


def event_message(event: BillingEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(value, key, headers) as the gateway publishes them."""
    headers = cloudevent_headers(event, source="/billing-fleet/stripe")
    return (
        event.model_dump_json().encode(),
        (event.customer_id or "").encode(),
        [(name, value.encode()) for name, value in headers.items()],
    )


async def create_topics(settings: FleetSettings, *topics: str, partitions: int = 2) -> None:
    assert settings.kafka_bootstrap_servers
    await ensure_topics(settings.kafka_bootstrap_servers, topics, partitions, 1)


async def publish(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value, key, headers in messages:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def publish_events(bootstrap: str, topic: str, events: Sequence[BillingEvent]) -> None:
    await publish(bootstrap, topic, [event_message(e) for e in events])


async def prepare_tables(database_url: str) -> None:
    """The toy worker's migrations (``tests/toy_worker/migrations``), as ``migrate`` runs them."""
    await migrate(database_url, (toy_worker.MIGRATIONS,))


def worker_settings(settings: FleetSettings, **overrides: Any) -> FleetSettings:
    """Settings for fast tests: short group session (Tansu holds a join for half of it),
    short retry waits, two partitions."""
    values: dict[str, Any] = {
        "worker_session_timeout_ms": 1000,
        "worker_retry_backoff_seconds": [0.05, 0.1],
        "worker_dependency_backoff_max_seconds": 0.5,
        "worker_shutdown_timeout_seconds": 10,
        "kafka_topic_partitions": 2,
        **overrides,
    }
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def running(spec: WorkerSpec, settings: FleetSettings) -> AsyncIterator[asyncio.Task[None]]:
    """``run_worker`` in a task for the block, cancelled (graceful stop) at its end."""
    task = asyncio.create_task(run_worker(spec, settings, serve_http=False))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(
    predicate: Any, *, timeout: float = 20.0, interval: float = 0.1, message: str = ""
) -> None:
    """Poll the async ``predicate`` until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting: {message or predicate}")
        await asyncio.sleep(interval)


async def wait_for_dead_letters(bootstrap: str, topic: str, count: int) -> list[DeadLetter]:
    """The dead letters on ``topic`` once there are at least ``count``."""
    found: list[DeadLetter] = []

    async def arrived() -> bool:
        found[:] = await read_records(bootstrap, topic)
        return len(found) >= count

    await wait_for(arrived, message=f"{count} dead letters in {topic}")
    return found


async def applied(database_url: str, consumer: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT stripe_event_id FROM toy_applied WHERE consumer = $1", consumer
        )
    finally:
        await conn.close()
    return [row["stripe_event_id"] for row in rows]


def build_entitlement(settings: FleetSettings) -> WorkerSpec:
    """The real entitlement worker, as the registry builds it, consuming ``TOY_TOPIC``
    (a test's own input topic) instead of billing.events.v1."""
    from workers.entitlement.worker import build as build_real

    return named_as_toy(build_real(settings).consuming(os.environ["TOY_TOPIC"]))
