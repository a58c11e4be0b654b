"""A worker's Kafka subscriber of one topic: fetch a batch, apply it, dead-letter poison,
commit.

A worker has one of these per subscribed topic, each its own consumer in its own group
(``WorkerSpec.consumer_key``): each topic is fetched, retried and committed on its own,
so poison or a slow batch on one topic does not hold another's. FastStream owns the
consumer (a batch subscriber with ``AckPolicy.MANUAL``: it never commits by itself). Our
handler applies the whole batch and commits the batch's offsets explicitly, only after
the database transaction(s) committed. While the handler runs, FastStream does not
fetch: an outage or a poison retry holds the consumer where it is (every partition of
the topic waits, which is what an outage of the shared database needs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias, cast

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from faststream.kafka import KafkaBroker
from faststream.kafka.message import FAKE_CONSUMER, KafkaMessage
from faststream.middlewares import AckPolicy

from contracts import dead_letter_topic
from workers.runtime import metrics
from workers.runtime.asyncapi import documented
from workers.runtime.dead_letters import FailureLog, dead_letter_headers
from workers.runtime.failures import (
    dependency_delay,
    is_dependency_failure,
    jitter,
    retry_delay,
)
from workers.runtime.processing import Handled, apply, event_type
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import Subscription, WorkerSpec

log = logging.getLogger(__name__)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
Key = tuple[int, int]  # (partition, offset) within the subscribed topic

# The handler blocks fetching while it waits out an outage. aiokafka leaves the group
# when fetching pauses longer than max_poll_interval_ms, and the partitions would then
# bounce between replicas that all wait for the same database. Liveness is covered by
# heartbeats (session timeout), which continue in the background during the wait.
MAX_POLL_INTERVAL_MS: Final = 6 * 60 * 60 * 1000
POLL_TIMEOUT_MS: Final = 10
"""Longest wait of one poll of the consumer's buffer (and FastStream's sleep after an
empty one): the pickup delay it adds while the broker's fetch waits for records."""


class _Stopping(Exception):
    """Shutdown was asked for while the batch waited: give it back uncommitted."""


async def _raw_records(records: tuple[Record, ...]) -> KafkaMessage:
    # Our own parser: FastStream's decodes every header as UTF-8 and every JSON body, and
    # a parse error there would skip the batch without our handler ever seeing it.
    return KafkaMessage(body=b"", raw_message=records, consumer=FAKE_CONSUMER, headers={})


async def _records_of(message: KafkaMessage) -> list[Record]:
    return list(cast(tuple[Record, ...], message.raw_message))


class BatchConsumer:
    """Registers the subscriber of one of the worker's topics, and its DLT publisher, on
    ``broker``."""

    def __init__(
        self,
        spec: WorkerSpec,
        subscription: Subscription[Any],
        settings: RuntimeSettings,
        broker: KafkaBroker,
        pool: asyncpg.Pool,
        on_outbox_written: Callable[[], None],
    ) -> None:
        self.spec, self._settings, self._pool = spec, settings, pool
        self.subscription, topic = subscription, subscription.topic
        self._is_outage = spec.is_outage
        # A Kafka consumer group per topic (one group whose members consume different
        # topics rebalanced endlessly on the broker of the tests after a restart); the
        # first topic's group is the worker's name, as before there were several.
        self.group = spec.consumer_key(subscription)
        self._on_outbox_written = on_outbox_written
        self.stopping = asyncio.Event()
        self._backoff_max = settings.worker_dependency_backoff_max_seconds
        self._db_timeout = settings.worker_database_timeout_seconds
        session = settings.worker_session_timeout_ms
        self.subscriber = broker.subscriber(
            topic,
            batch=True,
            max_records=settings.worker_batch_max_records,
            # FastStream waits batch_timeout_ms for records, then sleeps as long again
            # after an empty poll: that sleep, not the broker, would bound pickup. Polls
            # are local (the fetcher fetches in the background), so they stay short and
            # the broker's fetch wait can be long (bench fetch-wait).
            batch_timeout_ms=min(settings.worker_fetch_wait_ms, POLL_TIMEOUT_MS),
            fetch_max_wait_ms=settings.worker_fetch_wait_ms,
            group_id=self.group,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            session_timeout_ms=session,
            heartbeat_interval_ms=max(session // 3, 30),
            parser=_raw_records,
            decoder=_records_of,
            title=f"{topic}:{spec.name}",
            description=f"Consumer group {self.group}: exactly-once effects in PostgreSQL.",
        )
        self.dead_letter_topic = dead_letter_topic(topic, spec.name)
        self._dead_letters = broker.publisher(
            self.dead_letter_topic,
            title=self.dead_letter_topic,
            description="Messages the worker could not process: original bytes, key and "
            "headers, plus dlt_* headers (error, attempts, origin).",
            schema=bytes,
        )

        async def on_batch(events: list[Record]) -> None:
            # The values are the raw records (see _records_of); ``documented`` annotates
            # them with the topic's contract type for the AsyncAPI document only.
            await self.consume(events)

        self.subscriber(documented(subscription, on_batch))

    @property
    def running(self) -> bool:
        return bool(self.subscriber.running) and self.subscriber.consumer is not None

    @property
    def _kafka(self) -> AIOKafkaConsumer:
        consumer = self.subscriber.consumer
        assert consumer is not None, "the subscriber is not started"
        return consumer

    async def consume(self, records: Sequence[Record]) -> None:
        """Apply ``records`` exactly once, dead-letter poison, then commit their offsets."""
        if not records:
            return
        started = time.perf_counter()
        failures: dict[Key, FailureLog] = {}
        done: set[Key] = set()
        try:
            await self._until_done(records, failures, done)
            await self._commit(records)
        except _Stopping:
            log.info(
                "shutdown: batch left uncommitted",
                extra={"worker": self.spec.name, "topic": self.subscription.topic},
            )
            return
        metrics.HANDLER_SECONDS.labels(self.spec.name).observe(time.perf_counter() - started)
        await self._report_lag()

    async def _until_done(
        self, records: Sequence[Record], failures: dict[Key, FailureLog], done: set[Key]
    ) -> None:
        outages = 0
        while True:
            try:
                await self._process(records, failures, done)
                return
            except _Stopping:
                raise
            except Exception as exc:
                # Anything escaping _process is an outage (or a bug of ours): never skip
                # the batch, since committing a later one would commit past it.
                outage = is_dependency_failure(exc, self._is_outage)
                level = logging.WARNING if outage else logging.ERROR
                delay = jitter(dependency_delay(outages, self._backoff_max))
                log.log(
                    level,
                    "dependency failure, batch retried",
                    exc_info=level == logging.ERROR,
                    extra={"worker": self.spec.name, "error": repr(exc), "retry_in": delay},
                )
                metrics.RETRIES.labels(self.spec.name, "dependency").inc()
                outages += 1
                await self._pause(delay)

    async def _process(
        self, records: Sequence[Record], failures: dict[Key, FailureLog], done: set[Key]
    ) -> None:
        pending = [r for r in records if (r.partition, r.offset) not in done]
        lanes = key_lanes(pending, self._settings.worker_lanes)
        if len(lanes) <= 1:
            for lane in lanes:
                await self._process_lane(lane, failures, done)
            return
        # Every lane runs to its end (its effects committed, or not); then the first
        # failure (an outage, or shutdown) retries what is not done.
        results = await asyncio.gather(
            *(self._process_lane(lane, failures, done) for lane in lanes),
            return_exceptions=True,
        )
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            # Shutdown first: an outage another lane met is not worth a retry now.
            raise next((e for e in errors if isinstance(e, _Stopping)), errors[0])

    async def _process_lane(
        self, records: Sequence[Record], failures: dict[Key, FailureLog], done: set[Key]
    ) -> None:
        if not any((r.partition, r.offset) in failures for r in records):
            try:
                handled, wrote_outbox = await apply(
                    self._pool, self.spec, self.subscription, records, self._db_timeout
                )
            except Exception as exc:
                if is_dependency_failure(exc, self._is_outage):
                    raise
                log.info(
                    "a message of the batch failed: one transaction per message",
                    extra={"worker": self.spec.name, "error": repr(exc)},
                )
            else:
                self._finish(handled, wrote_outbox, done)
                return
        for record in records:
            failure = failures.setdefault((record.partition, record.offset), FailureLog())
            await self._apply_alone(record, failure, done)

    async def _apply_alone(self, record: Record, failure: FailureLog, done: set[Key]) -> None:
        max_attempts = self._settings.worker_max_attempts
        while failure.attempts < max_attempts:
            try:
                handled, wrote_outbox = await apply(
                    self._pool, self.spec, self.subscription, [record], self._db_timeout
                )
            except Exception as exc:
                if is_dependency_failure(exc, self._is_outage):
                    raise
                failure.record(exc)
                log.warning(
                    "message failed",
                    extra=_log_extra(self.spec.name, record, exc, failure.attempts),
                )
                if failure.attempts < max_attempts:
                    metrics.RETRIES.labels(self.spec.name, "poison").inc()
                    schedule = self._settings.worker_retry_backoff_seconds
                    await self._pause(jitter(retry_delay(failure.attempts, schedule)))
            else:
                self._finish(handled, wrote_outbox, done)
                return
        await self._dead_letter(record, failure)
        done.add((record.partition, record.offset))

    async def _dead_letter(self, record: Record, failure: FailureLog) -> None:
        # The worker's name, as in the dead-letter topic's name: what `dlt` looks for.
        headers = dead_letter_headers(record, failure, self.spec.name)
        # Awaiting the broker's ack (acks=all) before the offset commit; a Kafka error or
        # timeout here is an outage and retries the batch (the attempts are remembered).
        async with asyncio.timeout(self._settings.kafka_publish_timeout_seconds):
            await self._dead_letters.publish(record.value or b"", key=record.key, headers=headers)
        metrics.DEAD_LETTERS.labels(self.spec.name).inc()
        type_ = event_type(record, self.subscription.types)
        metrics.EVENTS_HANDLED.labels(self.spec.name, type_, "dead_lettered").inc()
        log.error(
            "message dead-lettered",
            extra={
                **_log_extra(self.spec.name, record, failure.last_error, failure.attempts),
                "dead_letter_topic": self.dead_letter_topic,
            },
        )

    def _finish(self, handled: list[Handled], wrote_outbox: bool, done: set[Key]) -> None:
        debug = log.isEnabledFor(logging.DEBUG)
        for item in handled:
            done.add((item.record.partition, item.record.offset))
            if debug:
                log.debug(
                    "event handled",
                    extra={
                        "worker": self.spec.name,
                        "topic": item.record.topic,
                        # processed_events.event_id (event_id is the ce_id elsewhere)
                        "processed_event_id": item.event_id,
                        "trace_id": _trace_id(item.record),
                        "outcome": item.outcome,
                    },
                )
        # One increment per (type, outcome): a child lookup per event costs more than it.
        for (type_, outcome), count in Counter((i.type, i.outcome) for i in handled).items():
            metrics.EVENTS_HANDLED.labels(self.spec.name, type_, outcome).inc(count)
            if outcome == "duplicate":
                metrics.DUPLICATES_SKIPPED.labels(self.spec.name).inc(count)
        if wrote_outbox:
            self._on_outbox_written()

    async def _commit(self, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        outages = 0
        while True:
            try:
                await self._kafka.commit(offsets)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                # The partitions moved to another member during the batch: it re-reads
                # from the last commit and finds our processed_events rows.
                log.warning("commit refused after a rebalance", extra={"error": repr(exc)})
                return
            except Exception as exc:
                if not is_dependency_failure(exc, self._is_outage):
                    raise
                delay = dependency_delay(
                    outages, self._settings.worker_dependency_backoff_max_seconds
                )
                log.warning("commit failed, retried", extra={"error": repr(exc), "in": delay})
                metrics.RETRIES.labels(self.spec.name, "dependency").inc()
                outages += 1
                await self._pause(jitter(delay))

    async def _report_lag(self) -> None:
        # After every batch (positions are local, a few µs a partition): the last batch
        # before the consumer idles must leave the gauge at the lag it left.
        consumer = self._kafka
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    position = await consumer.position(tp)
                metrics.CONSUMER_LAG.labels(self.spec.name, tp.topic, str(tp.partition)).set(
                    max(0, highwater - position)
                )

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds unless shutdown is asked for first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.stopping.wait()
        if self.stopping.is_set():
            raise _Stopping


def key_lanes(records: Sequence[Record], lanes: int) -> list[list[Record]]:
    """``records`` split into at most ``lanes`` groups by Kafka key, each key's records in
    their order: the groups share no key, so they may run as concurrent transactions
    without reordering any key's events (the key is the customer: see ``partition_key``)."""
    groups: list[list[Record]] = [[] for _ in range(lanes)]
    for record in records:
        groups[hash(record.key) % lanes].append(record)
    return [group for group in groups if group]


def _trace_id(record: Record) -> str | None:
    for name, value in record.headers:
        if name == "traceparent":
            parts = value.decode(errors="replace").split("-")
            return parts[1] if len(parts) > 1 else None
    return None


def _log_extra(
    worker: str, record: Record, error: BaseException | None, attempts: int
) -> dict[str, Any]:
    ce_id = next((v.decode(errors="replace") for n, v in record.headers if n == "ce_id"), None)
    return {
        "worker": worker,
        "topic": record.topic,
        "event_id": ce_id,
        "trace_id": _trace_id(record),
        "partition": record.partition,
        "offset": record.offset,
        "error": repr(error),
        "attempts": attempts,
    }
