"""Receipt counters benchmark: what the counter row costs the invoice worker's lanes.

A backlog of N ``payment.succeeded`` events (N/6 customers, every payment the platform's
in one year: each receipt-issuing transaction takes the same counter row) is published to
a topic of its own (6 partitions) on an embedded broker, once per configuration (replicas
x lanes). Each configuration runs ``billing-fleet worker invoice`` processes on a fresh
migrated database (with the tests' recording document channel,
``tests.toy_worker:INVOICE_ON_TOPIC``: no PDFs are rendered, their cost is ``bench
receipts``'), joined before the backlog is published, while ``tests/pg_waits.py`` samples
what their event transactions wait on. Printed per configuration: receipts/s between the
first and the last batch's start, the lane-time of the event transactions, and the share
of it spent waiting for the counter row and for the advisory locks (estimates from
samples), with the longest wait seen. Each run is then checked: receipts 1..N, one per
payment. No target: the figures answer how much the counter row serializes lanes.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx

from bench import infra, machine, procs
from bench.events import Message
from billing_fleet.kafka_admin import ensure_topics
from contracts import (
    EventSource,
    Payment,
    PaymentEvent,
    cloudevent_headers,
    event_id_for,
)
from fleet.embedded import EmbeddedKafka, free_port
from tests.pg_waits import ADVISORY, COUNTER, WaitSampler, WaitSummary
from workers.invoice.worker import NAME

PARTITIONS = 6
APPLICATION = "bench-counters-"
ROOT = Path(__file__).resolve().parents[1]
PREFIX = "B"
PAID = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Config:
    replicas: int
    lanes: int

    @property
    def label(self) -> str:
        return f"{self.replicas} replica(s) x {self.lanes} lane(s)"


@dataclass(frozen=True)
class Result:
    config: Config
    receipts_per_s: float
    lane_seconds: float  # sampled time inside event transactions, all lanes together
    waits: WaitSummary


def parse_configs(text: str) -> list[Config]:
    """``"1x1,2x2"``: replicas x lanes."""
    configs = []
    for item in text.split(","):
        replicas, _, lanes = item.strip().partition("x")
        configs.append(Config(int(replicas), int(lanes)))
    return configs


def messages(count: int, customers: int) -> list[Message]:
    """One succeeded card payment each, as the gateway publishes it (key = customer)."""
    out = []
    for i in range(count):
        stripe_id = f"evt_bench_{i:07d}"
        event = PaymentEvent(
            id=event_id_for(stripe_id),
            type="payment.succeeded",
            occurred_at=PAID + timedelta(seconds=i),
            source=EventSource(
                stripe_event_id=stripe_id,
                stripe_event_type="payment_intent.succeeded",
                api_version="2025-11-17.clover",
                livemode=False,
                account=None,
            ),
            customer_id=f"cus_bench_{i % customers:05d}",
            payment=Payment(
                id=f"pi_bench_{i:07d}",
                payment_intent_id=f"pi_bench_{i:07d}",
                charge_id=f"ch_bench_{i:07d}",
                invoice_id=None,
                amount=1900,
                amount_refunded=0,
                currency="eur",
                status="succeeded",
                failure_code=None,
                failure_message=None,
                receipt_url=None,
                description="bench payment",
                metadata={},
                amount_captured=1900,
                payment_method_type="card",
                card_brand="visa",
                card_last4="4242",
                created_at=PAID + timedelta(seconds=i),
                refunds=[],
            ),
        )
        headers = cloudevent_headers(event, source="/billing-fleet/stripe")
        out.append(
            Message(
                value=event.model_dump_json().encode(),
                key=(event.customer_id or "").encode(),
                headers=[(name, value.encode()) for name, value in headers.items()],
            )
        )
    return out


def _with_application_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("application_name", name)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _ready(ports: Sequence[int], timeout: float) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(timeout):
        for port in ports:
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)


async def measure(
    config: Config,
    bootstrap: str,
    url: str,
    topic: str,
    backlog: list[Message],
    ports: Sequence[int],
    timeout: float,
) -> Result:
    await _ready(ports, timeout)
    await asyncio.sleep(2.0)  # the group settles: every replica holds partitions
    conn = await asyncpg.connect(url)
    try:
        async with WaitSampler(url, APPLICATION) as sampler:
            await infra.publish(bootstrap, backlog, topic=topic)
            deadline = time.monotonic() + timeout
            while await _applied(conn) < len(backlog):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{config.label}: not every event applied in {timeout} s")
                await asyncio.sleep(0.1)
        stats = await conn.fetchrow(
            "SELECT min(processed_at) AS first, max(processed_at) AS last,"
            " count(*) FILTER (WHERE processed_at = (SELECT max(processed_at)"
            " FROM processed_events)) AS last_batch FROM processed_events"
        )
        numbers = await conn.fetchval(
            "SELECT array_agg(sequence ORDER BY sequence) FROM ledger_receipts"
        )
    finally:
        await conn.close()
    if list(numbers or []) != list(range(1, len(backlog) + 1)):
        raise RuntimeError(f"{config.label}: the receipts are not numbered 1..{len(backlog)}")
    assert stats is not None  # aggregates return one row
    span = (stats["last"] - stats["first"]).total_seconds()
    if span <= 0:
        raise RuntimeError(f"{config.label}: one batch only; publish more payments")
    summary = sampler.summary
    interval = summary.seconds / summary.samples if summary.samples else 0.0
    return Result(
        config,
        receipts_per_s=(len(backlog) - stats["last_batch"]) / span,
        lane_seconds=summary.in_batch * interval,
        waits=summary,
    )


async def _applied(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM processed_events WHERE consumer = $1", NAME
    )
    return count


def run_config(
    config: Config,
    server: str,
    workdir: Path,
    backlog: list[Message],
    batch: int,
    timeout: float,
) -> Result:
    with ExitStack() as stack:
        kafka = stack.enter_context(EmbeddedKafka())  # a fresh broker: a fresh group
        bootstrap = kafka.bootstrap_servers
        topic = "bench.counters"
        asyncio.run(ensure_topics(bootstrap, [topic], PARTITIONS, 1))
        url = stack.enter_context(infra.fresh_database(server, "counters"))
        ports = []
        for replica in range(config.replicas):
            port = free_port()
            ports.append(port)
            env = infra.child_env(
                KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                DATABASE_URL=_with_application_name(url, f"{APPLICATION}{replica}"),
                BILLING_WORKER_DECLARATION="tests.toy_worker:INVOICE_ON_TOPIC",
                TOY_TOPIC=topic,
                PYTHONPATH=str(ROOT),
                BILLING_INVOICE_RECEIPT_PREFIX=PREFIX,
                BILLING_WORKER_HTTP_PORT=str(port),
                BILLING_WORKER_LANES=str(config.lanes),
                BILLING_WORKER_BATCH_MAX_RECORDS=str(batch),
                BILLING_WORKER_SESSION_TIMEOUT_MS="1000",
                BILLING_LOG_LEVEL="WARNING",
            )
            stack.enter_context(
                procs.running(
                    infra.billing_fleet("worker", NAME),
                    log_path=workdir / f"worker-{replica}.log",
                    env=env,
                )
            )
        return asyncio.run(measure(config, bootstrap, url, topic, backlog, ports, timeout))


def report(results: Sequence[Result], *, count: int, customers: int, batch: int) -> str:
    row = "{:<26} {:>10} {:>12} {:>16} {:>16} {:>12}"
    lines = [
        f"receipt counters benchmark: {machine.described()}, {count:,} succeeded payments "
        f"({customers:,} customers) on one sequence, {PARTITIONS} partitions, "
        f"batches <= {batch}",
        "",
        row.format(
            "configuration",
            "receipts/s",
            "lane-seconds",
            "counter wait",
            "advisory wait",
            "longest",
        ),
    ]
    for r in results:
        w = r.waits
        lines.append(
            row.format(
                r.config.label,
                f"{r.receipts_per_s:,.0f}",
                f"{r.lane_seconds:.2f}",
                f"{w.share(COUNTER):.1%} ({w.waits[COUNTER]})",
                f"{w.share(ADVISORY):.1%} ({w.waits[ADVISORY]})",
                f"{w.longest.get(COUNTER, 0.0) * 1000:.0f} ms",
            )
        )
    lines.append("")
    for r in results:
        doing = r.waits.doing
        total = sum(doing.values()) or 1
        top = ", ".join(f"{what} {n / total:.0%}" for what, n in doing.most_common(5))
        lines.append(f"{r.config.label}: {top}")
    lines += [
        "",
        "lane-seconds: sampled time inside event transactions, all lanes and replicas;",
        "counter/advisory wait: the share of it waiting for that lock (distinct waits seen);",
        "longest: the longest counter wait seen (a lower bound). Every run numbered 1..N.",
        "Below the table, what that time went to: client = the worker's turn (it computes or",
        "waits for a CPU) with the transaction open, running = PostgreSQL on a CPU, else the",
        "wait event (Lock:transactionid is the counter row here).",
    ]
    return "\n".join(lines)


def run(*, payments: int, customers: int | None, configs: str, batch: int, timeout: float) -> int:
    customers = customers or max(1, payments // 6)
    chosen = parse_configs(configs)
    backlog = messages(payments, customers)
    results = []
    with procs.stopped_by_sigterm(), ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-counters-")))
        server = infra.postgres_server(stack, workdir)
        for config in chosen:
            print(f"{config.label} ...", file=sys.stderr, flush=True)
            results.append(run_config(config, server, workdir, backlog, batch, timeout))
    print(report(results, count=payments, customers=customers, batch=batch))
    return 0
