"""The dispatcher: sends a worker's due deliveries, outside any event transaction.

Rows are leased with ``FOR UPDATE SKIP LOCKED`` in a short claim of their own (replicas
share the work, no global lock), sent with bounded concurrency and a bounded time per
send, and each result is recorded with the attempt. A failure that is the destination's
outage makes only that row due again later (its channel's backoff, or the receiver's
``Retry-After``); other rows and the worker's partitions go on. One destination (a URL's
origin) holds at most ``per_destination`` of the send slots (a channel whose sends all go
through one server, ``channel.Relayed``: that server, at most the sends the channel takes
at once, ``max_sends``), and a retry recorded for it
pushes its other due rows back by the same wait: an endpoint that hangs until the timeout
slows its own rows only. Receivers' texts are recorded and logged with any e-mail address
in them masked.

The crash window: a dispatcher killed after a receiver got the request but before the
result was recorded leaves the row leased; once the lease expires another claim sends it
again, with the same idempotency key (``webhook-id`` over HTTP), so the receiver can drop
the copy. Nothing is lost, and nothing is sent twice to a receiver that dedupes by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

import asyncpg

from billing_fleet.db import bounded_connection
from billing_fleet.masking import mask_addresses
from workers.runtime.deliveries.channel import Relayed, Sender
from workers.runtime.deliveries.metrics import DELIVERIES, DELIVERIES_PENDING, DELIVERY_SECONDS
from workers.runtime.deliveries.model import SendResult, Status
from workers.runtime.deliveries.store import (
    Attempted,
    Claimed,
    claim,
    pending_counts,
    push_back,
    push_back_channels,
    record,
    release,
)
from workers.runtime.failures import (
    back_off,
    is_dependency_failure,
    jitter,
    retry_delay,
)

log = logging.getLogger(__name__)

PENDING_COUNT_SECONDS: Final = 1.0
"""Least time between two counts of the pending rows (the gauge)."""
RECORD_GATHER_SECONDS: Final = 0.005
"""How long a few finished results wait for more while sends are in flight."""
QUEUED_PER_RELAY_SLOT: Final = 2
"""Rows per send slot a relay's channel claims ahead, started as its sends finish."""


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
        per_destination: int | None = None,
        lease_seconds: float,
        db_timeout: float,
        poll_interval: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        if not channels:
            raise ValueError("a dispatcher needs at least one channel")
        self._pool, self._channels, self._worker = pool, dict(channels), worker
        self._concurrency, self._lease = concurrency, lease_seconds
        self._per_destination = min(concurrency, per_destination or concurrency)
        # Channels whose sends all count against their one server, not each destination,
        # and each server's cap: the sends its channels take at once (their connections),
        # set with the channel, so a relay is sized apart from the endpoints' share.
        self._relays: dict[str, str] = {}
        self._relay_caps: dict[str, int] = {}
        for name, sender in self._channels.items():
            if isinstance(sender, Relayed):
                group, takes = sender.limit_group, sender.max_sends
                self._relays[name] = group
                takes = min(takes, concurrency, self._relay_caps.get(group, takes))
                self._relay_caps[group] = takes
        self._by_group: Counter[str] = Counter()  # sends in flight per destination or server
        # A relay's rows claimed ahead of its free slots (with the loop time of their claim),
        # started as its sends finish: one claim per several mails, not one per mail.
        self._queued: dict[str, deque[tuple[float, Claimed]]] = {
            group: deque() for group in self._relays.values()
        }
        self._draining = False
        self._expired: list[Claimed] = []  # queued rows whose lease ran short: given back
        self._record_margin = db_timeout + RECORD_GATHER_SECONDS
        self._queue_room = {group: self._room_of(group) for group in self._queued}
        self._cooling: dict[str, float] = {}  # its name -> loop time its retry waits to
        self._drain_deadline: float | None = None
        self._db_timeout, self._poll, self._backoff_max = db_timeout, poll_interval, backoff_max
        self._wake = asyncio.Event()
        # Due rows may have been left unclaimed: the last claim filled what it asked for,
        # or skipped a destination at its limit, or a wake-up passed without a claim. Only
        # then does a finished send (a freed slot) call for another claim; otherwise new
        # rows come with their own wake-up (a commit, a retry's time) or the poll.
        self._backlog = True
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

    def drain_until(self, deadline: float) -> None:
        """On the coming cancellation, wait for the sends in flight until ``deadline``
        (the event loop's clock) at the latest, not their whole timeout: what is left of
        the worker's shutdown budget."""
        self._drain_deadline = deadline

    async def run(self) -> None:
        """Claim and send until cancelled; outages of PostgreSQL are retried with backoff.
        On cancellation (a graceful stop) nothing more is claimed; the sends in flight get
        their channel's timeout (at most until the ``drain_until`` deadline) to finish and
        are recorded; any still running then is cancelled (its lease expires and it is
        sent again, with the same key)."""
        failures = 0
        recorder = asyncio.create_task(self._record_results(), name=f"{self._worker}-results")
        try:
            while True:
                await self._settle_queues()
                free = self._concurrency - len(self._in_flight)
                if free >= self._claim_at_least or (free and not self._in_flight):
                    try:
                        # Before the claim's query: its leases run from a moment later.
                        claimed_at = asyncio.get_running_loop().time()
                        claimed = await self._claim(free)
                        failures = 0
                    except Exception as exc:
                        await back_off(
                            "delivery claim", exc, failures, self._backoff_max, worker=self._worker
                        )
                        failures += 1
                        continue
                    await self._start_all(claimed, claimed_at)
                    await self._count_pending()
                    if len(claimed) == free:
                        continue  # maybe more are due: claim again once slots free up
                else:
                    self._backlog = True  # this wake-up's rows are claimed when slots free
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            self._draining = True  # a send that ends starts no queued row now
            queued = [row for queue in self._queued.values() for _, row in queue]
            for queue in self._queued.values():
                queue.clear()
            await self._give_back(queued)
            if self._in_flight:
                longest = max(sender.timeout_seconds for sender in self._channels.values())
                if self._drain_deadline is not None:
                    left = self._drain_deadline - asyncio.get_running_loop().time()
                    longest = max(0.0, min(longest, left))
                await asyncio.wait(set(self._in_flight), timeout=longest)
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)
            # What finished before the stop, once (bounded); else the leases expire.
            with contextlib.suppress(Exception):
                await self._flush_results()

    def _cap(self, group: str) -> int:
        """Sends at once to ``group``: its relay's cap, or a destination's share."""
        return self._relay_caps.get(group, self._per_destination)

    def _group(self, row: Claimed) -> str:
        """What ``row``'s send slot counts against: its channel's server, or its origin."""
        return self._relays.get(row.delivery.channel) or row.origin

    async def _claim(self, limit: int) -> list[Claimed]:
        now = asyncio.get_running_loop().time()
        self._cooling = {g: until for g, until in self._cooling.items() if until > now}
        full = {g for g, n in self._by_group.items() if n >= self._cap(g)}
        full.update(self._cooling)
        # A relay's channel takes rows for its free slots and its queue, and only once
        # that room is a slot's worth or more (a backlog of mails is claimed a few at a
        # time, not one per finished send); one that is out is skipped whole. The other
        # channels share the slots the relays leave, skipping the destinations (origins)
        # at their limit.
        free = {
            group: room
            for group in set(self._relays.values())
            if group not in self._cooling
            and (room := self._relay_room(group))
            >= (self._cap(group) if self._queue_room[group] else 1)
        }
        others = [c for c in self._channels if c not in self._relays]
        # Left behind: a relay out of room, a destination at its limit (cooling ones are
        # woken when due), a claim that got all it asked for (below). Until this claim
        # has answered, as after an early return or an error, rows may be left.
        self._backlog = True
        backlog = any(
            group not in free and group not in self._cooling for group in self._relay_caps
        ) or any(g not in self._cooling and g not in self._relay_caps for g in full)
        if not free and not others:
            return []
        claimed: list[Claimed] = []
        async with bounded_connection(self._pool, self._db_timeout) as conn:
            for channel, group in self._relays.items():
                take = free.get(group, 0)
                if take > 0:
                    rows = await claim(conn, self._worker, [channel], take, self._lease)
                    free[group] -= len(rows)
                    backlog |= len(rows) == take
                    claimed += rows
            # The slots the relay rows just claimed take when they start now.
            starting = Counter(self._group(row) for row in claimed)
            relay_slots = sum(
                min(n, max(0, self._cap(group) - self._by_group[group]))
                for group, n in starting.items()
            )
            if others and limit > relay_slots:
                origins = sorted(full.difference(self._relays.values()))
                left = limit - relay_slots
                rows = await claim(conn, self._worker, others, left, self._lease, origins)
                backlog |= len(rows) == left
                claimed += rows
            elif others:
                backlog = True  # the relays' rows took every slot
        self._backlog = backlog
        return claimed

    async def _start_all(self, claimed: Sequence[Claimed], claimed_at: float) -> None:
        """Start the claimed rows' sends, up to each destination's share; give back the
        rest (a backlog to one destination filled the claim)."""
        surplus: list[Claimed] = []
        for row in claimed:
            group = self._group(row)
            if (
                self._by_group[group] < self._cap(group)
                and group not in self._cooling
                and len(self._in_flight) < self._concurrency
            ):
                self._start(row)
            elif len(self._queued.get(group, ())) < self._queue_room.get(group, 0):
                self._queued[group].append((claimed_at, row))
            else:
                surplus.append(row)
        if surplus:
            self._backlog = True  # due again now: claimed as their destination's sends end
        await self._give_back(surplus)

    def _start(self, row: Claimed) -> None:
        group = self._group(row)
        self._by_group[group] += 1
        task = asyncio.create_task(self._deliver(row), name=f"{self._worker}-delivery-{row.id}")
        self._in_flight.add(task)
        task.add_done_callback(lambda done: self._done(done, group))

    def _done(self, task: asyncio.Task[None], group: str) -> None:
        self._in_flight.discard(task)
        self._by_group[group] -= 1
        if self._by_group[group] <= 0:
            del self._by_group[group]
        if group in self._queued and not task.cancelled() and not self._draining:
            self._start_queued(group)
        if self._backlog:
            self._wake.set()

    def _room_of(self, group: str) -> int:
        """How many rows the relay ``group`` queues: none unless the last of them, which
        waits for up to ``QUEUED_PER_RELAY_SLOT`` sends, can still send and record its
        result within its lease."""
        longest = max(
            self._channels[channel].timeout_seconds
            for channel, relay in self._relays.items()
            if relay == group
        )
        needs = (QUEUED_PER_RELAY_SLOT + 1) * longest + self._record_margin
        return QUEUED_PER_RELAY_SLOT * self._cap(group) if self._lease > needs else 0

    def _relay_room(self, group: str) -> int:
        """Rows the relay ``group`` may still take: its free slots and queue room."""
        held = self._by_group[group] + len(self._queued[group])
        return self._cap(group) + self._queue_room[group] - held

    def _start_queued(self, group: str) -> None:
        """Start the relay's queued rows on its free slots (and the dispatcher's); a row
        whose lease could run out before its send and its recording end is given back
        instead (never two senders at once)."""
        queue = self._queued[group]
        now = asyncio.get_running_loop().time()
        while (
            queue
            and group not in self._cooling
            and self._by_group[group] < self._cap(group)
            and len(self._in_flight) < self._concurrency
        ):
            claimed_at, row = queue.popleft()
            needs = self._channels[row.delivery.channel].timeout_seconds + self._record_margin
            if now + needs < claimed_at + self._lease:
                self._start(row)
            else:
                self._expired.append(row)
                self._wake.set()  # the loop gives it back

    async def _settle_queues(self) -> None:
        """Give back the queued rows of relays that are out (cooling): the recorded retry
        pushes their due time back with the relay's other rows; start the others."""
        now = asyncio.get_running_loop().time()
        for group, queue in self._queued.items():
            until = self._cooling.get(group, 0.0)
            if queue and until > now:
                await self._give_back([row for _, row in queue], wait_seconds=until - now)
                queue.clear()
        for group in self._queued:
            self._start_queued(group)
        expired, self._expired = self._expired, []
        await self._give_back(expired)

    async def _give_back(self, rows: Sequence[Claimed], wait_seconds: float = 0.0) -> None:
        """``release`` the claimed rows that will not be sent now, due after
        ``wait_seconds``; bounded, and if PostgreSQL does not answer their leases expire
        instead (they are sent a little later)."""
        if not rows:
            return
        try:
            async with bounded_connection(self._pool, self._db_timeout) as conn:
                await release(conn, rows, wait_seconds)
        except Exception as exc:
            log.warning("claimed deliveries not given back", extra={"error": repr(exc)})

    async def _deliver(self, row: Claimed) -> None:
        channel = row.delivery.channel
        sender = self._channels[channel]
        started_at = datetime.now(UTC)
        began = time.perf_counter()
        result = _masked(await _send(sender, row))
        DELIVERY_SECONDS.labels(channel).observe(time.perf_counter() - began)
        status, retry_in = _next_state(sender, row.tries, result)
        DELIVERIES.labels(
            self._worker, channel, "dead" if status == "dead" else result.outcome
        ).inc()
        if status == "dead":
            log.warning(
                "delivery dead after its last attempt",
                extra={"worker": self._worker, "delivery_id": row.id, "error": result.detail},
            )
        if status == "pending":
            # Its destination is out: claim none of its rows until this one is due again
            # (before the recorded result pushes them back for every replica).
            until = asyncio.get_running_loop().time() + retry_in
            group = self._group(row)
            self._cooling[group] = max(self._cooling.get(group, 0.0), until)
        self._results.append(Attempted(row, started_at, result, status, retry_in))
        self._results_ready.set()

    async def _record_results(self) -> None:
        """Write the results of finished sends, many per statement, until cancelled;
        kept and retried while PostgreSQL is out (the rows' leases hold them meanwhile)."""
        failures = 0
        while True:
            await self._results_ready.wait()
            if len(self._results) < self._claim_at_least and self._in_flight:
                # More finish any moment: a few ms more makes one statement of several
                # (fast receivers, a local relay, finish hundreds a second).
                await asyncio.sleep(RECORD_GATHER_SECONDS)
            self._results_ready.clear()
            try:
                await self._flush_results()
                failures = 0
            except Exception as exc:
                self._results_ready.set()  # kept: the next round records them
                await back_off(
                    "recording delivery results",
                    exc,
                    failures,
                    self._backoff_max,
                    worker=self._worker,
                )
                failures += 1

    async def _flush_results(self) -> None:
        """Record the finished results. An outage keeps them all for the next try; any
        other error (a result PostgreSQL refuses) is the result's own: then each is
        recorded alone, and one that still fails is logged and dropped (its lease expires
        and the row is sent again), so it blocks no other result."""
        batch, self._results = self._results, []
        try:
            async with bounded_connection(self._pool, self._db_timeout) as conn:
                try:
                    await record(conn, batch)
                    recorded = batch
                except Exception as exc:
                    if is_dependency_failure(exc):
                        raise
                    log.error(
                        "delivery results refused, recording them one by one",
                        extra={"worker": self._worker, "error": repr(exc)},
                    )
                    alone, batch = batch, []  # from here on, _record_each keeps what is left
                    recorded = await self._record_each(conn, alone)
                await self._push_back(conn, recorded)
        except BaseException:
            self._results[:0] = batch
            raise
        loop = asyncio.get_running_loop()
        for attempted in recorded:
            if attempted.status == "pending":
                # Due again then: wake the loop instead of waiting for a poll.
                loop.call_later(attempted.retry_in, self._wake.set)

    async def _record_each(
        self, conn: asyncpg.Connection, batch: list[Attempted]
    ) -> list[Attempted]:
        """Record each result alone; one refused is recorded again without its code and
        detail, and dropped (logged) if even that is refused."""
        recorded: list[Attempted] = []
        for index, attempted in enumerate(batch):
            try:
                try:
                    await record(conn, [attempted])
                except Exception as exc:
                    if is_dependency_failure(exc):
                        raise
                    log.error(
                        "delivery result refused: recorded without its code and detail",
                        extra={
                            "worker": self._worker,
                            "delivery_id": attempted.claimed.id,
                            "error": repr(exc),
                        },
                    )
                    attempted = _bare(attempted, exc)
                    await record(conn, [attempted])
            except Exception as exc:
                if is_dependency_failure(exc):
                    self._results[:0] = batch[index:]
                    raise
                log.error(
                    "delivery result not recorded: dropped, the row is sent again",
                    extra={
                        "worker": self._worker,
                        "delivery_id": attempted.claimed.id,
                        "error": repr(exc),
                    },
                )
                continue
            recorded.append(attempted)
        return recorded

    async def _push_back(self, conn: asyncpg.Connection, recorded: Sequence[Attempted]) -> None:
        waits: dict[tuple[str, str], float] = {}  # (channel, origin) -> wait
        servers: dict[str, float] = {}  # a relay's limit group -> wait
        for a in recorded:
            if a.status != "pending":
                continue
            channel = a.claimed.delivery.channel
            if channel in self._relays:
                server = self._relays[channel]
                servers[server] = max(servers.get(server, 0.0), a.retry_in)
            else:
                key = (channel, a.claimed.origin)
                waits[key] = max(waits.get(key, 0.0), a.retry_in)
        # Every channel through a server that is out waits, not only the one that tried it.
        channels = {c: servers[g] for c, g in self._relays.items() if g in servers}
        try:
            await push_back(conn, self._worker, waits)
            await push_back_channels(conn, self._worker, channels)
        except Exception as exc:  # only an optimisation: the rows are tried as they come due
            log.warning("failing destination's rows not pushed back", extra={"error": repr(exc)})

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


def _bare(attempted: Attempted, exc: BaseException) -> Attempted:
    """``attempted`` without the receiver's code and text (what PostgreSQL refused)."""
    result = attempted.result
    detail = f"result not recordable ({type(exc).__name__})"
    bare = SendResult(result.outcome, None, detail, result.retry_after)
    return dataclasses.replace(attempted, result=bare)


def _masked(result: SendResult) -> SendResult:
    """``result`` with any e-mail address in its text masked (an SMTP reply names the
    recipient): what the attempts table and the logs keep."""
    if result.detail is None or "@" not in result.detail:
        return result
    return dataclasses.replace(result, detail=mask_addresses(result.detail))


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
