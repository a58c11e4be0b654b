"""Receipts under replicas and SIGKILL: two ``billing-fleet worker invoice`` processes in
one consumer group, lanes on, on a topic of several partitions, while a few hundred
payments of many customers (the platform's and a few Connect accounts', over two years)
flow in; one replica is SIGKILLed while a transaction of it holds receipt numbers it has
not committed, then started again.
Once every event is processed: each (account, prefix, year) sequence is exactly 1..n, each
succeeded payment has exactly one receipt and no other payment one, and each counter row
holds its sequence's last number.

It also samples what the replicas' transactions waited on (``tests/pg_waits.py``) and
prints it with the receipts' timing: the cost of the counter row under concurrent lanes
(no assertion on it).

The replicas consume the test's own topic (``tests.toy_worker:INVOICE_ON_TOPIC``) with a
recording receipt-document channel: the numbering is under test here, and rendering a
few hundred PDFs on the test machine's cores would take longer than the whole stream (the
e2e test renders one through the real sender).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from contracts import BillingEvent
from contracts.events import PaymentEventType
from tests.cli_support import stop_all, tail, wait_worker_ready
from tests.fleet_settings import FleetSettings
from tests.integration.test_runtime_process import start_worker
from tests.invoice_support import payment, payment_event
from tests.pg_waits import WaitSampler
from tests.runtime_toy import create_topics, event_message, unique, wait_for
from workers.invoice.receipts import DOCUMENT_CHANNEL, receipt_number

pytestmark = pytest.mark.integration

PARTITIONS = 6
PAYMENTS = 240
CUSTOMERS = 60
# Per customer, by its index: the platform's (""), mostly, and three Connect accounts.
ACCOUNTS = ("", "", "", "", "acct_1RepA", "acct_1RepB", "acct_1RepC")
PREFIX = "RP"
APPLICATION = "invoice-replica-"  # application_name of the replicas' connections
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# Transactions of one replica (by application_name) that took receipt numbers and have not
# committed: the counter statement holds the counter table's RowExclusiveLock until the end.
NUMBERING = """
SELECT a.backend_xid::text::bigint AS xid
FROM pg_stat_activity a
JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'relation' AND l.granted
    AND l.relation = 'ledger_receipt_counters'::regclass AND l.mode = 'RowExclusiveLock'
WHERE a.datname = current_database() AND a.application_name = $1
  AND a.backend_xid IS NOT NULL
"""
# Statements of one replica that run (a COMMIT among them); one waiting for a lock is not
# committing (its holder may be another lane of the same stopped replica).
RUNNING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND state = 'active'
  AND wait_event_type IS DISTINCT FROM 'Lock'
"""
# The status of a transaction by its 32-bit id (pg_stat_activity's), in the epoch of the
# next transaction id or the one before.
XACT_STATUS = """
WITH here AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next)
SELECT pg_xact_status((CASE WHEN $1 < (next & 4294967295) THEN (next >> 32 << 32) | $1
                            ELSE ((next >> 32) - 1 << 32) | $1 END)::text::xid8)
FROM here
"""


@dataclass(frozen=True)
class Planned:
    """One payment and how it goes: ``succeeded`` (the intent's event, then the charge's
    with its card), ``failed``, or ``retried`` (failed, then succeeded)."""

    payment_id: str
    customer_id: str
    account: str
    year: int
    outcome: str

    @property
    def receipted(self) -> bool:
        return self.outcome != "failed"

    def events(self) -> list[tuple[PaymentEventType, str, bool]]:
        """(event type, status, carries the card) in the order Stripe sends them."""
        failed: tuple[PaymentEventType, str, bool] = (
            "payment.failed",
            "requires_payment_method",
            False,
        )
        if self.outcome == "failed":
            return [failed]
        if self.outcome == "retried":
            return [failed, ("payment.succeeded", "succeeded", True)]
        return [("payment.succeeded", "succeeded", False), ("payment.succeeded", "succeeded", True)]


def plan(run: str) -> list[Planned]:
    planned = []
    for i in range(PAYMENTS):
        customer = i % CUSTOMERS
        outcome = "failed" if i % 20 < 3 else "retried" if i % 20 < 6 else "succeeded"
        planned.append(
            Planned(
                payment_id=f"pi_{run}_{i:04d}",
                customer_id=f"cus_{run}_{customer:03d}",
                account=ACCOUNTS[customer % len(ACCOUNTS)],
                year=2025 if i % 4 == 0 else 2026,
                outcome=outcome,
            )
        )
    return planned


def stream(planned: list[Planned]) -> list[BillingEvent]:
    """Every payment's events, each payment's in order, the payments interleaved."""
    rng = random.Random(20260301)
    pending = [deque((p, i, step) for step in p.events()) for i, p in enumerate(planned)]
    events: list[BillingEvent] = []
    while pending:
        queue = rng.choice(pending)
        p, i, (event_type, status, card) = queue.popleft()
        if not queue:
            pending.remove(queue)
        created = datetime(p.year, 1 + i % 12, 1 + i % 28, 8, tzinfo=UTC)
        events.append(
            payment_event(
                event_type,
                payment(
                    p.payment_id,
                    status=status,
                    charge=f"ch_{p.payment_id[3:]}",
                    card=card,
                    amount=1000 + i,
                    created_at=created,
                ),
                customer_id=p.customer_id,
                occurred_at=created + timedelta(seconds=len(events)),
                account=p.account or None,
            )
        )
    return events


def with_application_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("application_name", name)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def start_replica(
    settings: FleetSettings, url: str, topic: str, log: Path, worker: str, replica: str
) -> tuple[subprocess.Popen[bytes], int]:
    return start_worker(
        settings,
        log,
        TOY_NAME=worker,
        TOY_TOPIC=topic,
        BILLING_WORKER_DECLARATION="tests.toy_worker:INVOICE_ON_TOPIC",
        DATABASE_URL=with_application_name(url, APPLICATION + replica),
        BILLING_INVOICE_RECEIPT_PREFIX=PREFIX,
        BILLING_WORKER_LANES="2",  # the default, said here: lanes stay on
        BILLING_WORKER_BATCH_MAX_RECORDS="25",  # many transactions: more to kill, more to race
    )


async def publish_paced(bootstrap: str, topic: str, events: list[BillingEvent]) -> None:
    """The events as the gateway publishes them (key = customer), 20 at a time with a
    short pause: a stream the replicas work through while it arrives."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for start in range(0, len(events), 20):
            for event in events[start : start + 20]:
                value, key, headers = event_message(event)
                await producer.send_and_wait(topic, value, key=key, headers=headers)
            await asyncio.sleep(0.25)
    finally:
        await producer.stop()


async def scalar(conn: asyncpg.Connection, query: str, *args: Any) -> Any:
    return await conn.fetchval(query, *args)


async def kill_while_numbering(
    process: subprocess.Popen[bytes],
    conn: asyncpg.Connection,
    application: str,
    when: Callable[[], Awaitable[bool]],
) -> list[int]:
    """SIGKILL ``process`` (once ``when()``) while a transaction of it holds receipt
    numbers it has not committed. When one shows, the process is stopped (SIGSTOP); once
    none of its statements runs any more (a COMMIT already sent ends; one waiting for a
    lock is no COMMIT), a transaction still open can only be rolled back: the process is
    killed. Else it is resumed and watched again. Returns the ids of the transactions it
    left open."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        if await when() and await conn.fetch(NUMBERING, application):
            process.send_signal(signal.SIGSTOP)
            try:
                await wait_for(partial(_quiet, conn, application), timeout=5, interval=0.005)
            except AssertionError:  # a statement of it still runs (blocked on a stopped
                process.send_signal(signal.SIGCONT)  # client): resume, try the next one
                continue
            xids = [row["xid"] for row in await conn.fetch(NUMBERING, application)]
            if xids:
                process.kill()
                return xids
            process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.002)
    raise AssertionError("no transaction of the replica was caught holding receipt numbers")


async def applied_by(port: int) -> int:
    """The events a replica applied, from its /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "billing_events_handled_total"
            and sample.labels.get("outcome") == "applied"
        )
    )


async def _quiet(conn: asyncpg.Connection, application: str) -> bool:
    return not await conn.fetchval(RUNNING, application)


async def _finished(conn: asyncpg.Connection, xid: int) -> bool:
    return bool(await conn.fetchval(XACT_STATUS, xid) != "in progress")


async def test_two_replicas_one_killed_mid_transaction_number_receipts_without_gaps(
    settings: FleetSettings, create_database: Any, tmp_path: Path
) -> None:
    url = await create_database(migrated=True)  # its receipts and counters alone
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    topic = unique("invoice.replicas")
    await create_topics(settings, topic, partitions=PARTITIONS)
    planned = plan(uuid.uuid4().hex[:6])
    events = stream(planned)
    expected_receipts = sum(p.receipted for p in planned)
    logs = {name: tmp_path / f"replica-{name}.log" for name in ("a", "b", "a2")}
    worker = unique("invoice")  # the replicas' consumer group, of this test alone
    replicas = {
        name: start_replica(settings, url, topic, logs[name], worker, name) for name in ("a", "b")
    }
    conn = await asyncpg.connect(url)
    try:
        for name, (process, port) in replicas.items():
            await wait_worker_ready(process, port, logs[name])

        async with WaitSampler(url, APPLICATION) as sampler:
            started = time.monotonic()
            publishing = asyncio.create_task(publish_paced(bootstrap, topic, events))

            async def past_a_fifth() -> bool:
                issued = await scalar(conn, "SELECT count(*) FROM ledger_receipts")
                return bool(issued >= expected_receipts // 5)

            killed, _ = replicas["a"]
            xids = await kill_while_numbering(killed, conn, APPLICATION + "a", past_a_fifth)
            assert await asyncio.to_thread(killed.wait, 10) == -signal.SIGKILL
            for xid in xids:  # its numbers went back with its transaction
                await wait_for(partial(_finished, conn, xid), timeout=10, message="its end")
                assert await scalar(conn, XACT_STATUS, xid) == "aborted"
            receipts_at_kill = await scalar(conn, "SELECT count(*) FROM ledger_receipts")
            replicas["a2"] = start_replica(settings, url, topic, logs["a2"], worker, "a2")
            await wait_worker_ready(*replicas["a2"], logs["a2"])

            await publishing
            published = time.monotonic()

            async def all_processed() -> bool:
                done = await scalar(
                    conn, "SELECT count(*) FROM processed_events WHERE consumer = $1", worker
                )
                return bool(done == len(events))

            await wait_for(all_processed, timeout=40, interval=0.1, message="every event")
            processed = time.monotonic()
        by_replica = {name: await applied_by(replicas[name][1]) for name in ("b", "a2")}
        await wait_for(lambda: _empty_outbox(conn), timeout=20, message="the outbox relayed")
    finally:
        await conn.close()
        stop_all([process for process, _ in replicas.values()])
    for name in ("b", "a2"):
        assert replicas[name][0].returncode == 0, tail(logs[name])

    conn = await asyncpg.connect(url)
    try:
        receipts = await conn.fetch(
            "SELECT number, account, livemode, prefix, year, sequence, payment_id"
            " FROM ledger_receipts"
        )
        counters = await conn.fetch(
            "SELECT account, prefix, year, last_number FROM ledger_receipt_counters"
        )
        payments = await conn.fetch("SELECT payment_id, status FROM ledger_payments")
        documents = await conn.fetch(
            "SELECT idempotency_key FROM deliveries WHERE worker = $1 AND channel = $2",
            worker,
            DOCUMENT_CHANNEL,
        )
        span = await scalar(
            conn, "SELECT extract(epoch FROM max(issued_at) - min(issued_at)) FROM ledger_receipts"
        )
        transactions = await scalar(
            conn, "SELECT count(DISTINCT processed_at) FROM processed_events"
        )
    finally:
        await conn.close()

    # Every sequence is 1..n, and its numbers are the receipts' own.
    sequences: defaultdict[tuple[str, str, int], list[int]] = defaultdict(list)
    for r in receipts:
        sequences[(r["account"], r["prefix"], r["year"])].append(r["sequence"])
        assert r["number"] == receipt_number(
            r["prefix"], r["account"], r["year"], r["sequence"], livemode=r["livemode"]
        )
    expected_keys = Counter((p.account, PREFIX, p.year) for p in planned if p.receipted)
    assert {key: len(numbers) for key, numbers in sequences.items()} == dict(expected_keys)
    for key, numbers in sequences.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), key
    assert {(c["account"], c["prefix"], c["year"]): c["last_number"] for c in counters} == {
        key: max(numbers) for key, numbers in sequences.items()
    }
    # One receipt per succeeded payment, none for the others.
    status = {row["payment_id"]: row["status"] for row in payments}
    assert status == {p.payment_id: "succeeded" if p.receipted else "failed" for p in planned}
    receipted = Counter(r["payment_id"] for r in receipts)
    assert set(receipted) == {p for p, s in status.items() if s == "succeeded"}
    assert set(receipted.values()) == {1}
    # ... and one document delivery each.
    assert sorted(d["idempotency_key"] for d in documents) == sorted(
        f"receipt-pdf:{r['number']}" for r in receipts
    )

    summary = sampler.summary
    print(
        f"\n{len(events)} events, {len(receipts)} receipts in {len(sequences)} sequences, "
        f"2 replicas x 2 lanes, {PARTITIONS} partitions, batches <= 25;"
        f" replica a killed after {receipts_at_kill} receipts with {len(xids)} transaction(s)"
        f" holding numbers; then b applied {by_replica['b']}, a2 {by_replica['a2']} events"
        f"\npublished in {published - started:.1f} s; all processed "
        f"{processed - started:.1f} s after the first publish; receipts issued from first "
        f"to last in {span:.1f} s;"
        f" {transactions} event transactions"
    )
    print("\n".join(summary.lines()))


async def _empty_outbox(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT count(*) FROM outbox")
