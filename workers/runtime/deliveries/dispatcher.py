"""The dispatcher: sends a worker's due deliveries, outside any event transaction.

Rows are leased with ``FOR UPDATE SKIP LOCKED`` in a short claim of their own (replicas
share the work, no global lock), sent with bounded concurrency and a bounded time per
send, and each result is recorded with the attempt. A failure that is the destination's
outage makes only that row due again later (its channel's backoff, or the receiver's
``Retry-After``); other rows and the worker's partitions go on.

The crash window: a dispatcher killed after a receiver got the request but before the
result was recorded leaves the row leased; once the lease expires another claim sends it
again, with the same idempotency key (``webhook-id`` over HTTP), so the receiver can drop
the copy. Nothing is lost, and nothing is sent twice to a receiver that dedupes by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import asyncpg

from billing_fleet.db import bounded_connection
from workers.runtime.deliveries.channel import Sender
from workers.runtime.deliveries.metrics import DELIVERIES, DELIVERIES_PENDING, DELIVERY_SECONDS
from workers.runtime.deliveries.model import SendResult, Status
from workers.runtime.deliveries.store import Attempted, Claimed, claim, pending_counts, record
from workers.runtime.failures import dependency_delay, is_dependency_failure, jitter, retry_delay

log = logging.getLogger(__name__)

PENDING_COUNT_SECONDS: Final = 1.0
"""Least time between two counts of the pending rows (the gauge)."""


class Dispatcher:
    """Sends ``worker``'s deliveries through ``channels`` until cancelled; ``wake()``
    after a transaction that wrote deliveries committed, and it polls as well."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: Mapping[str, Sender],
        *,
        worker: str,
        concurrency: int,
        lease_seconds: float,
        db_timeout: float,
        poll_interval: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        if not channels:
            raise ValueError("a dispatcher needs at least one channel")
        self._pool, self._channels, self._worker = pool, dict(channels), worker
        self._concurrency, self._lease = concurrency, lease_seconds
        self._db_timeout, self._poll, self._backoff_max = db_timeout, poll_interval, backoff_max
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._counted_at = -PENDING_COUNT_SECONDS
        # Claim only when a fair share of the slots is free: one claim per few sends.
        self._claim_at_least = max(1, concurrency // 4)
        self._results: list[Attempted] = []
        self._results_ready = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self) -> None:
        """Claim and send until cancelled; outages of PostgreSQL are retried with backoff.
        On cancellation (a graceful stop) nothing more is claimed; the sends in flight get
        their channel's timeout to finish and are recorded; any still running then is
        cancelled (its lease expires and it is sent again, with the same key)."""
        failures = 0
        recorder = asyncio.create_task(self._record_results(), name=f"{self._worker}-results")
        try:
            while True:
                free = self._concurrency - len(self._in_flight)
                if free >= self._claim_at_least or (free and not self._in_flight):
                    try:
                        claimed = await self._claim(free)
                        failures = 0
                    except Exception as exc:
                        if not is_dependency_failure(exc):
                            log.exception("delivery claim failed", extra={"worker": self._worker})
                        delay = jitter(dependency_delay(failures, self._backoff_max))
                        failures += 1
                        log.warning(
                            "dispatcher waits for the database",
                            extra={"worker": self._worker, "error": repr(exc), "retry_in": delay},
                        )
                        await asyncio.sleep(delay)
                        continue
                    for row in claimed:
                        self._start(row)
                    await self._count_pending()
                    if len(claimed) == free:
                        continue  # maybe more are due: claim again once slots free up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            if self._in_flight:
                longest = max(sender.timeout_seconds for sender in self._channels.values())
                await asyncio.wait(set(self._in_flight), timeout=longest)
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)
            # What finished before the stop, once (bounded); else the leases expire.
            with contextlib.suppress(Exception):
                await self._flush_results()

    async def _claim(self, limit: int) -> list[Claimed]:
        async with bounded_connection(self._pool, self._db_timeout) as conn:
            return await claim(conn, self._worker, list(self._channels), limit, self._lease)

    def _start(self, row: Claimed) -> None:
        task = asyncio.create_task(self._deliver(row), name=f"{self._worker}-delivery-{row.id}")
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _deliver(self, row: Claimed) -> None:
        channel = row.delivery.channel
        sender = self._channels[channel]
        started_at = datetime.now(UTC)
        began = time.perf_counter()
        result = await _send(sender, row)
        DELIVERY_SECONDS.labels(channel).observe(time.perf_counter() - began)
        status, retry_in = _next_state(sender, row.attempt, result)
        DELIVERIES.labels(
            self._worker, channel, "dead" if status == "dead" else result.outcome
        ).inc()
        if status == "dead":
            log.warning(
                "delivery dead after its last attempt",
                extra={"worker": self._worker, "delivery_id": row.id, "error": result.detail},
            )
        self._results.append(Attempted(row, started_at, result, status, retry_in))
        self._results_ready.set()

    async def _record_results(self) -> None:
        """Write the results of finished sends, many per statement, until cancelled;
        kept and retried while PostgreSQL is out (the rows' leases hold them meanwhile)."""
        failures = 0
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            try:
                await self._flush_results()
                failures = 0
            except Exception as exc:
                delay = jitter(dependency_delay(failures, self._backoff_max))
                failures += 1
                log.warning(
                    "delivery results not recorded yet",
                    extra={"worker": self._worker, "error": repr(exc), "retry_in": delay},
                )
                self._results_ready.set()
                await asyncio.sleep(delay)

    async def _flush_results(self) -> None:
        batch, self._results = self._results, []
        try:
            async with bounded_connection(self._pool, self._db_timeout) as conn:
                await record(conn, batch)
        except BaseException:
            self._results[:0] = batch
            raise
        loop = asyncio.get_running_loop()
        for attempted in batch:
            if attempted.status == "pending":
                # Due again then: wake the loop instead of waiting for a poll.
                loop.call_later(attempted.retry_in, self._wake.set)

    async def _count_pending(self) -> None:
        now = time.monotonic()
        if now - self._counted_at < PENDING_COUNT_SECONDS:
            return
        self._counted_at = now
        try:
            async with bounded_connection(self._pool, self._db_timeout) as conn:
                counts = await pending_counts(conn, self._worker)
        except Exception as exc:  # only the gauge waits; the next claim's count retries
            log.warning("pending deliveries not counted", extra={"error": repr(exc)})
            return
        for channel in self._channels:
            DELIVERIES_PENDING.labels(self._worker, channel).set(counts.get(channel, 0))


async def _send(sender: Sender, row: Claimed) -> SendResult:
    """``sender.send`` within its timeout; a timeout or an exception is a retry."""
    try:
        async with asyncio.timeout(sender.timeout_seconds):
            return await sender.send(row.delivery)
    except TimeoutError:
        return SendResult("retry", detail=f"no result within {sender.timeout_seconds:g} s")
    except Exception as exc:
        log.exception("delivery sender raised", extra={"delivery_id": row.id})
        return SendResult("retry", detail=f"{type(exc).__name__}: {exc}")


def _next_state(sender: Sender, attempt: int, result: SendResult) -> tuple[Status, float]:
    """The row's status after ``attempt`` came to ``result``, and, if pending, the wait."""
    if result.outcome == "sent":
        return "sent", 0.0
    if result.outcome == "failed":
        return "failed", 0.0
    if attempt >= sender.policy.max_attempts:
        return "dead", 0.0
    wait = jitter(retry_delay(attempt, sender.policy.backoff_seconds))
    if result.retry_after is not None:
        wait = max(wait, result.retry_after)
    return "pending", wait
