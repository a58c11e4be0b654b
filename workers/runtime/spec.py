"""What a worker tells the runtime: its name, its handler, its tables.

A handler is a plain async function: it receives an open PostgreSQL transaction and one
typed event, applies its effects with SQL, and returns the events to emit; a worker may
add a batch handler that does the same for many events with fewer round trips. The
runtime does everything else: consuming, the idempotency row, batching, retries, dead
letters, the outbox, metrics and shutdown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import asyncpg

from contracts import BILLING_EVENTS, BillingEvent


class Outgoing(NamedTuple):
    """An event to publish; written to the outbox in the handler's transaction. A
    NamedTuple (workers make several per event): every field is required."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str]


class Poison(Exception):
    """The message itself cannot be processed (unknown product, invalid data).

    Any exception that is not a dependency failure counts as poison too; raising this
    one just says so explicitly, with a message an operator can act on.
    """


Handler = Callable[[asyncpg.Connection, BillingEvent], Awaitable[Sequence[Outgoing]]]
"""Apply one event inside the open transaction; return what to emit. Never commits.

Transactions on other Kafka keys run at the same time (``worker_lanes``): lock rows that
another key's events may also write (a deadlock is retried as an outage). Pooled
connections are not reset: leave no session state (``SET LOCAL``, transaction-level
advisory locks, no ``LISTEN``)."""

BatchHandler = Callable[[asyncpg.Connection, Sequence[BillingEvent]], Awaitable[Sequence[Outgoing]]]
"""Apply several events, in order, inside the open transaction: the same effects and the
same Outgoing (in the same order) as ``Handler`` on each in turn. Never commits."""

Periodic = Callable[[asyncpg.Connection], Awaitable[Sequence[Outgoing]]]
"""Time-driven work (e.g. expiring access) run in its own transaction, with an outbox."""


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    """Consumer group, ``processed_events.consumer`` and the metrics label."""
    handle: Handler
    topic: str = BILLING_EVENTS
    handle_batch: BatchHandler | None = None
    """Optional set-based equivalent of ``handle`` for many events (fewer round trips)."""
    periodic: Periodic | None = None
    periodic_interval_seconds: float = 30.0
    emits: tuple[str, ...] = ()
    """Topics the handler's Outgoing go to; declared so the AsyncAPI document lists them."""
    watch_files: tuple[Path, ...] = ()
    """Files the factory read (a catalog): ``billing-fleet dev`` rebuilds the worker from
    its factory when one of them changes."""
    is_outage: Callable[[BaseException], bool] | None = None
    """Errors of the worker's own dependencies that are outages; set from its declaration."""
