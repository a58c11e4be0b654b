"""``run_worker``: one worker process (or task) from start to graceful stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from billing_fleet.db import (
    bounded_connection,
    bounded_transaction,
    close_pool,
    create_pool,
    database_answers,
)
from billing_fleet.http_server import PROBE_TIMEOUT_SECONDS
from billing_fleet.kafka_admin import KafkaAdminError, connect_when_reachable, ensure_topics
from billing_fleet.kafka_security import kafka_security, servers
from billing_fleet.logs import FASTSTREAM
from billing_fleet.migrate import require_migrated
from workers.runtime.asyncapi import register_emitted
from workers.runtime.consumer import BatchConsumer
from workers.runtime.declaration import RUNTIME_MIGRATIONS
from workers.runtime.deliveries.dispatcher import Dispatcher
from workers.runtime.deliveries.run import close_senders, dispatcher_connections, dispatcher_for
from workers.runtime.failures import dependency_delay, is_dependency_failure, jitter
from workers.runtime.http import HttpServer, create_app
from workers.runtime.outbox import OutboxRelay, write_outbox
from workers.runtime.processing import write_effects
from workers.runtime.relay_sender import BatchSender
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import WorkerSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
# aiokafka's 16 KiB default holds a few dozen change events; a relay batch is 500 rows.
RELAY_MAX_BATCH_BYTES = 512 * 1024


async def run_worker(
    spec: WorkerSpec,
    settings: RuntimeSettings,
    *,
    serve_http: bool = True,
    migrations: tuple[str, ...] = (RUNTIME_MIGRATIONS,),
) -> None:
    """Consume ``spec.topics`` as consumer group ``spec.name`` until cancelled, once the
    ``migrations`` packages (the runtime's and the worker's own) are applied.

    Cancellation (SIGTERM/SIGINT through ``ShutdownSignals``) stops fetching, lets the
    in-flight batch finish and commit, flushes the outbox once more and closes, within
    ``worker_shutdown_timeout_seconds``.
    """
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise ValueError("the worker needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
    database_url, bootstrap = settings.database_url, settings.kafka_bootstrap_servers
    worker, is_outage = spec.name, spec.is_outage
    db_timeout = settings.worker_database_timeout_seconds
    # A connection per lane of each topic, plus the relay, the periodic job, the readiness
    # probe and the delivery dispatcher's (none without channels).
    lanes = settings.worker_lanes * len(spec.subscriptions)
    pool_size = max(10, lanes + 3 + dispatcher_connections(spec))
    pool = await _until_up(
        spec,
        "database",
        settings,
        lambda: create_pool(database_url, max_size=pool_size, connect_timeout=db_timeout),
    )
    try:
        await _until_up(
            spec, "database", settings, lambda: _require_migrated(pool, db_timeout, migrations)
        )
    except BaseException:
        pool.terminate()
        raise
    security = kafka_security(settings)
    broker = KafkaBroker(
        servers(bootstrap),
        acks="all",
        security=security.broker_security(),
        enable_idempotence=settings.kafka_enable_idempotence,
        # No short request_timeout_ms (unlike the gateway): the consumer shares it, and a
        # JoinGroup may legitimately wait for the rebalance. Our publishes have their own.
        client_id=f"billing-fleet-{worker}",
        graceful_timeout=settings.worker_shutdown_timeout_seconds,
        # Through our JSON logs; its per-batch "Received"/"Processed" lines at DEBUG.
        logger=FASTSTREAM,
        log_level=logging.DEBUG,
    )
    register_emitted(broker, spec)
    producer = relay_producer(settings, worker)

    relay = OutboxRelay(
        pool,
        BatchSender(producer).send_all,
        worker=worker,
        ack_timeout=settings.kafka_publish_timeout_seconds * 2,
        db_timeout=db_timeout,
        backoff_max=settings.worker_dependency_backoff_max_seconds,
        is_outage=is_outage,
    )
    dispatcher = dispatcher_for(spec, settings, pool)  # None without channels

    def wrote() -> None:  # after a transaction that wrote outbox rows or deliveries
        relay.wake()
        if dispatcher is not None:
            dispatcher.wake()

    consumers = [
        BatchConsumer(spec, subscription, settings, broker, pool, wrote)
        for subscription in spec.subscriptions
    ]
    dead_letter_topics = [consumer.dead_letter_topic for consumer in consumers]
    http: HttpServer | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        await _until_up(
            spec,
            "kafka topics",
            settings,
            lambda: _ensure_topics(
                settings, [*spec.topics, *dead_letter_topics, *spec.emits], is_outage
            ),
        )
        await _until_up(
            spec,
            "kafka",
            settings,
            lambda: connect_when_reachable(
                broker, bootstrap, PROBE_TIMEOUT_SECONDS, subscribers=True, security=security
            ),
        )
        await _until_up(spec, "kafka producer", settings, producer.start)
        if serve_http:
            asyncapi = AsyncAPI(broker, title=f"billing-fleet {worker} worker", version="1")
            probe_seconds = min(PROBE_TIMEOUT_SECONDS, db_timeout)
            checks = {
                "kafka": _async(lambda: all(consumer.running for consumer in consumers)),
                "database": lambda: database_answers(pool, probe_seconds),
            }
            app = create_app(checks, asyncapi.to_specification().to_json())
            http = HttpServer(app, settings.worker_http_host, settings.worker_http_port)
            await http.start()
        tasks.append(asyncio.create_task(relay.run(), name=f"{worker}-outbox-relay"))
        if dispatcher is not None:
            tasks.append(asyncio.create_task(dispatcher.run(), name=f"{worker}-deliveries"))
        if spec.periodic is not None:
            tasks.append(
                asyncio.create_task(
                    _periodic(spec, pool, wrote, db_timeout), name=f"{worker}-periodic"
                )
            )
        log.info("worker started", extra={"worker": worker, "topics": list(spec.topics)})
        await asyncio.gather(*tasks)  # runs until cancelled; raises only on a bug
    finally:
        await _shutdown(
            settings, spec, consumers, broker, producer, relay, dispatcher, tasks, http, pool
        )


async def _shutdown(
    settings: RuntimeSettings,
    spec: WorkerSpec,
    consumers: list[BatchConsumer],
    broker: KafkaBroker,
    producer: AIOKafkaProducer,
    relay: OutboxRelay,
    dispatcher: Dispatcher | None,
    tasks: list[asyncio.Task[None]],
    http: HttpServer | None,
    pool: asyncpg.Pool,
) -> None:
    worker = spec.name
    db_timeout = settings.worker_database_timeout_seconds
    log.info("worker stopping", extra={"worker": worker})
    if dispatcher is not None:
        # Sends in flight get what is left of the budget after recording their results
        # and the last outbox flush (a database timeout each), not a hard close.
        budget = settings.worker_shutdown_timeout_seconds - 2 * db_timeout
        dispatcher.drain_until(asyncio.get_running_loop().time() + max(0.0, budget))
    for consumer in consumers:
        consumer.stopping.set()  # an outage wait gives its batch back instead of holding on
    try:
        async with asyncio.timeout(settings.worker_shutdown_timeout_seconds):
            # Stops fetching and waits for the in-flight batches (each commits itself).
            await asyncio.gather(*(consumer.subscriber.stop() for consumer in consumers))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                # The last batch's outbox rows (its database steps are bounded: with the
                # database stalled it gives up, and the rows wait for the next start).
                await relay.flush()
            except Exception as exc:
                log.warning("last outbox flush failed", extra={"error": repr(exc)})
            await broker.stop()
            await producer.stop()
            await close_senders(spec)
            if http is not None:
                await http.stop()
            await close_pool(pool, db_timeout)
    except TimeoutError:
        log.error("shutdown timed out, closing hard", extra={"worker": worker})
        pool.terminate()
    log.info("worker stopped", extra={"worker": worker})


def relay_producer(settings: RuntimeSettings, worker: str) -> AIOKafkaProducer:
    """The outbox relay's producer: acks=all, and batches big enough for a relay batch."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        max_batch_size=RELAY_MAX_BATCH_BYTES,
        client_id=f"billing-fleet-{worker}-outbox",
        **kafka_security(settings).client_kwargs(),
    )


async def _until_up(
    spec: WorkerSpec, what: str, settings: RuntimeSettings, start: Callable[[], Awaitable[T]]
) -> T:
    """``await start()``, retried with backoff while it fails for an outage."""
    worker, attempt = spec.name, 0
    while True:
        try:
            return await start()
        except Exception as exc:
            if not is_dependency_failure(exc, spec.is_outage):
                raise
            delay = jitter(
                dependency_delay(attempt, settings.worker_dependency_backoff_max_seconds)
            )
            log.warning(
                f"{what} unavailable, retrying",
                extra={"worker": worker, "error": repr(exc), "retry_in": delay},
            )
            attempt += 1
            await asyncio.sleep(delay)


async def _ensure_topics(
    settings: RuntimeSettings,
    topics: list[str],
    is_outage: Callable[[BaseException], bool] | None,
) -> None:
    assert settings.kafka_bootstrap_servers
    try:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            topics,
            settings.kafka_topic_partitions,
            settings.kafka_topic_replication_factor,
            kafka_security(settings),
        )
    except KafkaAdminError as exc:
        if exc.__cause__ is not None and is_dependency_failure(exc.__cause__, is_outage):
            raise exc.__cause__ from exc
        # Not allowed to create topics (a managed cluster): they are provisioned elsewhere.
        log.warning("topics not ensured", extra={"error": str(exc)})


async def _periodic(
    spec: WorkerSpec, pool: asyncpg.Pool, wrote: Callable[[], None], timeout: float
) -> None:
    """``spec.periodic`` every interval, each run in its own transaction; its effects are
    written as a handler's are (Outgoing to the outbox, Delivery to ``deliveries``), and
    ``wrote`` wakes the relay and the dispatcher once they are committed."""
    assert spec.periodic is not None
    while True:
        try:
            async with bounded_transaction(pool, timeout) as conn:
                effects = await spec.periodic(conn)
                outgoing, delivered = await write_effects(conn, spec, effects)
                await write_outbox(conn, spec.name, outgoing)
            if outgoing or delivered:
                wrote()
        except Exception as exc:
            # The next tick retries; periodic work is idempotent by design (time-driven).
            outage = is_dependency_failure(exc, spec.is_outage)
            log.log(
                logging.WARNING if outage else logging.ERROR,
                "periodic work failed",
                exc_info=not outage,
                extra={"worker": spec.name, "error": repr(exc)},
            )
        await asyncio.sleep(spec.periodic_interval_seconds)


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


async def _require_migrated(
    pool: asyncpg.Pool, timeout: float, migrations: tuple[str, ...]
) -> None:
    async with bounded_connection(pool, timeout) as conn:
        await require_migrated(conn, migrations)
