"""Worker benchmark: a worker's events/s against the raw consume-and-write ceiling.

N normalized events of the worker (``bench.workloads``: subscription events for the
entitlement worker, the default; payment and invoice events for the invoice worker; real
fixtures, fresh ids) are published to ``billing.events.v1`` on an embedded broker (6
partitions). Then, each on its own fresh migrated database and consumer group: (a) the
raw ceiling (``bench.raw_consumer``, ``bench.raw_ledger``: aiokafka + one batched asyncpg
transaction per lane of a batch, writing the same rows and outbox rows, with the worker's
lanes and GC settings, no framework); (b) ``billing-fleet worker NAME``. Both are
subprocesses; the rate of each is read from ``processed_events.processed_at`` (the start
of each batch's transaction), so process start-up and group join are not counted. (a)
and (b) alternate for several rounds, each on a fresh broker; the ratio is the median of
the rounds' b/a: a shared VM's speed drifts over seconds to minutes, and pairing each
worker run with the ceiling run just before it cancels that drift (all figures are
printed). Every round compares the effects the workload names (``Effects.digest``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import infra, machine, procs
from bench.workloads import WORKLOADS, Effects, Workload
from billing_fleet.kafka_admin import ensure_topics
from contracts import BILLING_EVENTS
from fleet.command_settings import DevFleetSettings
from fleet.embedded import EmbeddedKafka, free_port

RAW_GROUP = "bench-raw"
TARGET_RATIO = 0.5
POLL_S = 0.25
PARTITIONS = 6

_STATS = """
WITH mine AS (SELECT processed_at FROM processed_events WHERE consumer = $1)
SELECT count(*) AS n, min(processed_at) AS first, max(processed_at) AS last,
       count(*) FILTER (WHERE processed_at = (SELECT max(processed_at) FROM mine)) AS last_batch
FROM mine
"""


@dataclass(frozen=True)
class Applied:
    events: int
    events_per_s: float
    batches_s: float  # first batch start -> last batch start
    effects: Effects
    outbox: int  # rows (a) wrote; rows (b) relayed


async def _count(conn: asyncpg.Connection, consumer: str) -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM processed_events WHERE consumer = $1", consumer
    )
    return n


async def wait_applied(
    database_url: str,
    consumer: str,
    expect: int,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
    workload: Workload,
) -> Applied:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while (n := await _count(conn, consumer)) < expect:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{consumer} exited with {process.returncode} after {n:,} of {expect:,} "
                    f"events:\n{procs.log_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{consumer}: {n:,} of {expect:,} events applied after {timeout:.0f} s:\n"
                    f"{procs.log_tail(log)}"
                )
            await asyncio.sleep(POLL_S)
        stats = await conn.fetchrow(_STATS, consumer)
        assert stats is not None  # an aggregate returns one row
        effects = await workload.effects(conn)
    finally:
        await conn.close()
    if n != expect:
        raise RuntimeError(f"{consumer}: {n:,} events applied, {expect:,} published")
    span = (stats["last"] - stats["first"]).total_seconds()
    if span <= 0:
        raise RuntimeError(f"{consumer}: all {n:,} events in one batch; publish more events")
    return Applied(
        events=n,
        # Between the first and the last batch's start, every batch but the last ran.
        events_per_s=(n - stats["last_batch"]) / span,
        batches_s=span,
        effects=effects,
        outbox=effects.outbox,
    )


def measure_raw(
    workload: Workload,
    workdir: Path,
    bootstrap: str,
    database_url: str,
    batch: int,
    expect: int,
    timeout: float,
    fetch_wait_ms: int,
    lanes: int,
) -> Applied:
    log = workdir / "raw_consumer.log"
    command = [
        sys.executable,
        "-m",
        workload.raw_module,
        bootstrap,
        database_url,
        RAW_GROUP,
        str(batch),
        str(expect),
        str(fetch_wait_ms),
        str(lanes),
    ]
    with procs.running(command, log_path=log, env=infra.child_env()) as process:
        return asyncio.run(
            wait_applied(database_url, RAW_GROUP, expect, process, log, timeout, workload)
        )


def measure_worker(
    workload: Workload,
    workdir: Path,
    bootstrap: str,
    database_url: str,
    batch: int,
    expect: int,
    timeout: float,
    lanes: int,
) -> Applied:
    log = workdir / "worker.log"
    port = free_port()
    env = infra.worker_env(
        bootstrap,
        database_url,
        port,
        {
            **workload.worker_env,
            "BILLING_WORKER_BATCH_MAX_RECORDS": str(batch),
            "BILLING_WORKER_LANES": str(lanes),
            "BILLING_LOG_LEVEL": "WARNING",
        },
    )
    name = workload.worker
    with procs.running(infra.billing_fleet("worker", name), log_path=log, env=env) as p:
        applied = asyncio.run(wait_applied(database_url, name, expect, p, log, timeout, workload))
        # The relay deletes what the broker acknowledged: count what it relayed instead.
        asyncio.run(wait_relayed(database_url, p, log, timeout))
        relayed = relayed_rows(port, name)
    return dataclasses.replace(applied, outbox=relayed)


async def wait_relayed(
    database_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while left := await conn.fetchval("SELECT count(*) FROM outbox"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{left:,} outbox rows never relayed:\n{procs.log_tail(log)}")
            await asyncio.sleep(POLL_S)
    finally:
        await conn.close()


def relayed_rows(port: int, worker: str) -> int:
    """``billing_outbox_published_total`` of the worker, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'billing_outbox_published_total{{worker="{worker}"}}'):
            return int(float(line.split()[-1]))
    raise RuntimeError("the worker's /metrics has no billing_outbox_published_total")


def _verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def report(
    rounds: Sequence[tuple[Applied, Applied]],
    *,
    workload: Workload,
    batch: int,
    fetch_wait_ms: int,
    lanes: int,
    publish_s: float,
) -> str:
    raws, workers = [r for r, _ in rounds], [w for _, w in rounds]
    raw = max(raws, key=lambda a: a.events_per_s)
    worker = max(workers, key=lambda a: a.events_per_s)
    ratios = [w.events_per_s / r.events_per_s for r, w in rounds]
    ratio = statistics.median(ratios)
    width = 9 * len(rounds)
    raw_label = "(a) raw ceiling: aiokafka + 1 batched asyncpg txn per lane"
    row = "{:<" + str(len(raw_label)) + "} {:>" + str(width) + "} {:>9}"

    def rates(applied: Sequence[Applied]) -> str:
        return "".join(f"{a.events_per_s:>9,.0f}" for a in applied)

    same = all(r.effects.digest == w.effects.digest for r, w in rounds)
    # (a) applies only each row's newest event of a lane's batch: where an object has several
    # events in one batch it may emit fewer changes than (b), never more.
    if all(r.outbox == w.outbox for r, w in rounds):
        relayed = "yes"
    elif all(r.outbox <= w.outbox for r, w in rounds):
        relayed = "(b) more: (a) skips changes between a row's events in one batch"
    else:
        relayed = "NO, (b) relayed FEWER"
    lines = [
        f"worker benchmark: {machine.described()}, {workload.described}, {BILLING_EVENTS} "
        f"x{PARTITIONS} partitions on Tansu (a fresh broker per round, published in "
        f"{publish_s:.1f} s)",
        f"batch size: worker_batch_max_records = {batch} (both consumers), "
        f"fetch wait {fetch_wait_ms} ms, {lanes} concurrent transactions per batch "
        f"(worker_lanes, both); (a) and (b) alternate, {len(rounds)} rounds",
        *workload.notes,
        "",
        row.format("events/s", "per round", "best"),
        row.format(
            raw_label,
            rates(raws),
            f"{raw.events_per_s:,.0f}",
        ),
        row.format(
            f"(b) billing-fleet worker {workload.worker}",
            rates(workers),
            f"{worker.events_per_s:,.0f}",
        ),
        row.format(
            "b / a",
            "".join(f"{r:>9.2f}" for r in ratios),
            f"{worker.events_per_s / raw.events_per_s:.2f}",
        ),
        "",
        f"b / a = median of the rounds' ratios = {ratio:.2f}    target >= {TARGET_RATIO}: "
        f"{_verdict(ratio >= TARGET_RATIO)}",
        f"checks, every round: {raw.events:,} processed_events rows each; "
        f"{raw.effects.summary}: {'identical' if same else 'DIFFER'}; outbox rows "
        f"{raw.outbox:,} written (a) = relayed (b): {relayed}",
    ]
    if not same:
        lines += [
            f"  round {n}: (a) {r.effects.summary}; (b) {w.effects.summary}"
            for n, (r, w) in enumerate(rounds, 1)
        ]
    return "\n".join(line.rstrip() for line in lines)


def run(
    *,
    worker: str,
    count: int,
    customers: int | None,
    batch: int | None,
    timeout: float,
    rounds: int,
) -> int:
    settings = DevFleetSettings()
    batch = batch or settings.worker_batch_max_records
    fetch_wait_ms, lanes = settings.worker_fetch_wait_ms, settings.worker_lanes
    results: list[tuple[Applied, Applied]] = []
    with procs.stopped_by_sigterm(), ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-worker-")))
        print(f"generating {count:,} events ...", file=sys.stderr, flush=True)
        workload = WORKLOADS[worker](workdir, count, customers)
        server = infra.postgres_server(stack, workdir)
        for n in range(1, rounds + 1):
            # A fresh broker: both consumer groups start from the first offset again.
            with EmbeddedKafka() as kafka:
                bootstrap = kafka.bootstrap_servers
                asyncio.run(ensure_topics(bootstrap, [BILLING_EVENTS], PARTITIONS, 1))
                started = time.perf_counter()
                asyncio.run(infra.publish(bootstrap, workload.messages))
                publish_s = time.perf_counter() - started
                print(f"round {n}: (a) raw ceiling ...", file=sys.stderr, flush=True)
                with infra.fresh_database(server, f"raw{n}") as url:
                    raw = measure_raw(
                        workload,
                        workdir,
                        bootstrap,
                        url,
                        batch,
                        count,
                        timeout,
                        fetch_wait_ms,
                        lanes,
                    )
                print(f"round {n}: (b) {worker} worker ...", file=sys.stderr, flush=True)
                with infra.fresh_database(server, f"worker{n}") as url:
                    applied = measure_worker(
                        workload, workdir, bootstrap, url, batch, count, timeout, lanes
                    )
            results.append((raw, applied))
    print(
        report(
            results,
            workload=workload,
            batch=batch,
            fetch_wait_ms=fetch_wait_ms,
            lanes=lanes,
            publish_s=publish_s,
        )
    )
    return 0
