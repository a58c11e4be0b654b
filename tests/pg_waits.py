"""What the transactions of some processes waited on in PostgreSQL, sampled while they run.

``WaitSampler(url, application_prefix)`` polls ``pg_stat_activity`` (and ``pg_locks`` for
a waiting backend's ``waitstart``) of the backends whose ``application_name`` starts with
the prefix (set ``?application_name=`` in a process's ``DATABASE_URL``: asyncpg passes it
to the server). Each sample counts the backends inside an event transaction of the invoice
worker (one that holds or awaits its two-key advisory locks on customers and payments; the
outbox relay's and the dispatcher's transactions are left out) and, of those, the ones
waiting on a lock, sorted by what they wait for:

- ``counter``: a lock wait in the receipt counter statement (``ledger_receipt_counters``:
  the row another transaction incremented and has not committed yet);
- ``advisory``: the invoice worker's advisory locks (customers, payment references);
- ``other lock``: any other heavyweight lock (a row another transaction wrote).

Sampling sees a fraction of the waits shorter than its interval, so the shares are
estimates; each wait seen has its duration bounded from below by its ``waitstart``. This
measures, it asserts nothing: the tests print ``summary()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

import asyncpg

_SAMPLE = """
SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event,
       a.xact_start IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_locks e
           WHERE e.pid = a.pid AND e.locktype = 'advisory' AND e.objsubid = 2
       ) AS in_batch,
       position('ledger_receipt_counters' in a.query) > 0 AS on_counter,
       l.waitstart, clock_timestamp() AS sampled_at
FROM pg_stat_activity a
LEFT JOIN LATERAL (
    SELECT min(w.waitstart) AS waitstart FROM pg_locks w WHERE w.pid = a.pid AND NOT w.granted
) l ON true
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND starts_with(a.application_name, $1)
"""

COUNTER, ADVISORY, OTHER_LOCK = "counter", "advisory", "other lock"


def _kind(row: asyncpg.Record) -> str | None:
    if row["wait_event_type"] != "Lock":
        return None
    if row["on_counter"]:
        return COUNTER
    return ADVISORY if row["wait_event"] == "advisory" else OTHER_LOCK


def _doing(row: asyncpg.Record) -> str:
    # Idle in the transaction, or between the messages of one extended-protocol query.
    if row["state"] == "idle in transaction" or row["wait_event"] == "ClientRead":
        return "client"
    if row["wait_event_type"] is None:
        return "running"
    return f"{row['wait_event_type']}:{row['wait_event']}"


@dataclass
class WaitSummary:
    seconds: float = 0.0
    samples: int = 0
    in_batch: int = 0  # backend-samples inside an event transaction
    waiting: Counter[str] = field(default_factory=Counter)  # backend-samples waiting, by kind
    # backend-samples by what the backend did: "running" (on CPU), "client" (waiting for
    # the worker's next message: it computes, or is itself waiting for a CPU), else its
    # wait event
    doing: Counter[str] = field(default_factory=Counter)
    waits: Counter[str] = field(default_factory=Counter)  # distinct waits seen, by kind
    longest: dict[str, float] = field(default_factory=dict)  # seconds, a lower bound

    def share(self, kind: str) -> float:
        return self.waiting[kind] / self.in_batch if self.in_batch else 0.0

    def lines(self) -> list[str]:
        interval = self.seconds / self.samples if self.samples else 0.0
        out = [
            f"{self.samples} samples over {self.seconds:.1f} s (one per {interval * 1000:.1f} ms), "
            f"{self.in_batch} backend-samples inside an event transaction"
        ]
        for kind in (COUNTER, ADVISORY, OTHER_LOCK):
            out.append(
                f"  waiting on {kind:<10} {self.waiting[kind]:>5} backend-samples "
                f"({self.share(kind):6.1%} of those, ~{self.waiting[kind] * interval:.2f}"
                f" lane-seconds), {self.waits[kind]} distinct waits seen, longest >= "
                f"{self.longest.get(kind, 0.0) * 1000:.0f} ms"
            )
        top = ", ".join(
            f"{what} {count / self.in_batch:.0%}" for what, count in self.doing.most_common(6)
        )
        out.append(f"  event transactions' time: {top}")
        return out


class WaitSampler:
    """``async with WaitSampler(url, prefix) as sampler``: samples until the block ends;
    then ``sampler.summary``."""

    def __init__(self, url: str, application_prefix: str, interval: float = 0.01) -> None:
        self._url = url
        self._prefix = application_prefix
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.summary = WaitSummary()
        self._waits: dict[tuple[int, datetime], tuple[str, float]] = {}

    async def __aenter__(self) -> WaitSampler:
        conn = await asyncpg.connect(self._url)
        self._task = asyncio.create_task(self._run(conn))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for kind, seconds in self._waits.values():
            self.summary.waits[kind] += 1
            self.summary.longest[kind] = max(self.summary.longest.get(kind, 0.0), seconds)

    async def _run(self, conn: asyncpg.Connection) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            while True:
                self._record(await conn.fetch(_SAMPLE, self._prefix))
                self.summary.samples += 1
                self.summary.seconds = loop.time() - started
                await asyncio.sleep(self._interval)
        finally:
            conn.terminate()  # no graceful close: it may be cancelled mid-query

    def _record(self, rows: list[asyncpg.Record]) -> None:
        for row in rows:
            if not row["in_batch"]:
                continue
            self.summary.in_batch += 1
            self.summary.doing[_doing(row)] += 1
            kind = _kind(row)
            if kind is None:
                continue
            self.summary.waiting[kind] += 1
            if row["waitstart"] is not None:
                seconds = (row["sampled_at"] - row["waitstart"]).total_seconds()
                self._waits[(row["pid"], row["waitstart"])] = (kind, seconds)
