"""Worker benchmark: entitlement events/s against the raw consume-and-upsert ceiling.

N normalized subscription events (real fixtures, fresh ids, N/4 customers, bench catalog
prices) are published to ``billing.events.v1`` on an embedded broker (6 partitions).
Then, each on its own fresh migrated database and consumer group: (a) the raw ceiling,
``bench.raw_consumer`` (aiokafka + one batched asyncpg transaction per lane of a batch,
writing the same rows and change events, with the worker's lanes and GC settings, no
framework); (b) ``billing-fleet worker entitlement``. Both are subprocesses; the rate of
each is read from ``processed_events.processed_at`` (the start of each batch's
transaction), so process start-up and group join are not counted. (a) and (b) alternate
for several rounds, each on a fresh broker; the ratio is the median of the rounds' b/a:
a shared VM's speed drifts over seconds to minutes, and pairing each worker run with the
ceiling run just before it cancels that drift (all figures are printed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
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

from bench import events, infra, procs
from billing_fleet.kafka_admin import ensure_topics
from contracts import BILLING_EVENTS
from fleet.command_settings import DevFleetSettings
from fleet.embedded import EmbeddedKafka, free_port
from workers.entitlement.worker import NAME as WORKER_NAME

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
# A digest of the effects both runs must agree on (rows, limits, sources).
_EFFECTS = """
SELECT count(*) AS n, md5(coalesce(string_agg(
    customer_id || '/' || feature || '/' || coalesce("limit"::text, '-') || '/'
    || array_to_string(sources, ','), ';' ORDER BY customer_id, feature), '')) AS digest,
    (SELECT count(*) FROM outbox) AS outbox
FROM entitlements
"""


@dataclass(frozen=True)
class Applied:
    events: int
    events_per_s: float
    batches_s: float  # first batch start -> last batch start
    entitlements: int
    digest: str
    outbox: int


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
        effects = await conn.fetchrow(_EFFECTS)
        assert stats is not None and effects is not None  # aggregates return one row
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
        entitlements=effects["n"],
        digest=effects["digest"],
        outbox=effects["outbox"],
    )


def measure_raw(
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
        "bench.raw_consumer",
        bootstrap,
        database_url,
        RAW_GROUP,
        str(batch),
        str(expect),
        str(fetch_wait_ms),
        str(lanes),
    ]
    with procs.running(command, log_path=log, env=infra.child_env()) as process:
        return asyncio.run(wait_applied(database_url, RAW_GROUP, expect, process, log, timeout))


def measure_worker(
    workdir: Path,
    bootstrap: str,
    database_url: str,
    catalog: Path,
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
        catalog,
        port,
        {
            "BILLING_WORKER_BATCH_MAX_RECORDS": str(batch),
            "BILLING_WORKER_LANES": str(lanes),
            "BILLING_LOG_LEVEL": "WARNING",
        },
    )
    with procs.running(infra.billing_fleet("worker", WORKER_NAME), log_path=log, env=env) as p:
        applied = asyncio.run(wait_applied(database_url, WORKER_NAME, expect, p, log, timeout))
        # The relay deletes what the broker acknowledged: count what it relayed instead.
        asyncio.run(wait_relayed(database_url, p, log, timeout))
        relayed = relayed_rows(port)
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


def relayed_rows(port: int) -> int:
    """``billing_outbox_published_total`` of the worker, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'billing_outbox_published_total{{worker="{WORKER_NAME}"}}'):
            return int(float(line.split()[-1]))
    raise RuntimeError("the worker's /metrics has no billing_outbox_published_total")


def _verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def report(
    rounds: Sequence[tuple[Applied, Applied]],
    *,
    count: int,
    customers: int,
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
    row = "{:<56} {:>" + str(width) + "} {:>9}"

    def rates(applied: Sequence[Applied]) -> str:
        return "".join(f"{a.events_per_s:>9,.0f}" for a in applied)

    same = all(r.digest == w.digest and r.entitlements == w.entitlements for r, w in rounds)
    # (a) applies only each customer's last event of a batch: where a customer repeats within
    # a batch (few customers per partition) it emits fewer changes than (b), never more.
    if all(r.outbox == w.outbox for r, w in rounds):
        relayed = "yes"
    elif all(r.outbox <= w.outbox for r, w in rounds):
        relayed = "(b) more: (a) skips changes between a customer's events in one batch"
    else:
        relayed = "NO, (b) relayed FEWER"
    lines = [
        f"worker benchmark: {os.cpu_count()} CPUs, {count:,} subscription events "
        f"({customers:,} customers, {len(events.PRICES)} plans), {BILLING_EVENTS} "
        f"x{PARTITIONS} partitions on Tansu (a fresh broker per round, published in "
        f"{publish_s:.1f} s)",
        f"batch size: worker_batch_max_records = {batch} (both consumers), "
        f"fetch wait {fetch_wait_ms} ms, {lanes} concurrent transactions per batch "
        f"(worker_lanes, both); (a) and (b) alternate, {len(rounds)} rounds",
        "",
        row.format("events/s", "per round", "best"),
        row.format(
            "(a) raw ceiling: aiokafka + 1 batched asyncpg txn per lane",
            rates(raws),
            f"{raw.events_per_s:,.0f}",
        ),
        row.format(
            f"(b) billing-fleet worker {WORKER_NAME}", rates(workers), f"{worker.events_per_s:,.0f}"
        ),
        row.format(
            "b / a",
            "".join(f"{r:>9.2f}" for r in ratios),
            f"{worker.events_per_s / raw.events_per_s:.2f}",
        ),
        "",
        f"b / a = median of the rounds' ratios = {ratio:.2f}    target >= {TARGET_RATIO}: "
        f"{_verdict(ratio >= TARGET_RATIO)}",
        f"checks, every round: {raw.events:,} processed_events rows each; entitlements "
        f"{'identical' if same else 'DIFFER'} ({raw.entitlements:,} rows); outbox rows "
        f"{raw.outbox:,} written (a) = relayed (b): {relayed}",
    ]
    return "\n".join(line.rstrip() for line in lines)


def run(
    *, count: int, customers: int | None, batch: int | None, timeout: float, rounds: int
) -> int:
    settings = DevFleetSettings()
    batch = batch or settings.worker_batch_max_records
    customers = customers or max(1, count // 4)
    fetch_wait_ms, lanes = settings.worker_fetch_wait_ms, settings.worker_lanes
    results: list[tuple[Applied, Applied]] = []
    with procs.stopped_by_sigterm(), ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-worker-")))
        catalog = events.write_catalog(workdir / "catalog.yaml")
        print(f"generating {count:,} events ...", file=sys.stderr, flush=True)
        messages = [events.to_message(e) for e in events.subscription_events(count, customers)]
        server = infra.postgres_server(stack, workdir)
        for n in range(1, rounds + 1):
            # A fresh broker: both consumer groups start from the first offset again.
            with EmbeddedKafka() as kafka:
                bootstrap = kafka.bootstrap_servers
                asyncio.run(ensure_topics(bootstrap, [BILLING_EVENTS], PARTITIONS, 1))
                started = time.perf_counter()
                asyncio.run(infra.publish(bootstrap, messages))
                publish_s = time.perf_counter() - started
                print(f"round {n}: (a) raw ceiling ...", file=sys.stderr, flush=True)
                with infra.fresh_database(server, f"raw{n}") as url:
                    raw = measure_raw(
                        workdir, bootstrap, url, batch, count, timeout, fetch_wait_ms, lanes
                    )
                print(f"round {n}: (b) entitlement worker ...", file=sys.stderr, flush=True)
                with infra.fresh_database(server, f"worker{n}") as url:
                    worker = measure_worker(
                        workdir, bootstrap, url, catalog, batch, count, timeout, lanes
                    )
            results.append((raw, worker))
    print(
        report(
            results,
            count=count,
            customers=customers,
            batch=batch,
            fetch_wait_ms=fetch_wait_ms,
            lanes=lanes,
            publish_s=publish_s,
        )
    )
    return 0
