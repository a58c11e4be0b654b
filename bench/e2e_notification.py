"""End-to-end benchmark of the receipt mail (``bench e2e --worker notification``): webhook
accepted at the gateway -> receipt mail received by a real SMTP server.

``billing-fleet gateway``, ``billing-fleet worker invoice`` and ``billing-fleet worker
notification`` run as subprocesses on an embedded broker and a fresh migrated database,
with their production topics (billing.events.v1 -> the invoice worker -> invoices.v1 ->
the notification worker, which consumes billing.events.v1 too, for its directory). The
notification worker's SMTP relay is ``bench.mail_sink``: aiosmtpd in its own process,
timing each mail's arrival. The invoice worker's receipt PDFs are parked
(``bench.parked_receipts``, as ``bench worker --worker invoice`` does): a render costs
about 0.3 s of a core, and 500 a second would bury the two cores the mail path shares;
everything else is the registry's workers with their default settings.

The customers come first: ``bench.e2e_client send --kind customer`` posts one
``customer.created`` (with the customer's own address, ``ledger_events.customer_email``)
per customer of the run, and the run waits until both workers know every one. Then
``send --kind receipt`` POSTs a signed ``payment_intent.succeeded`` (Stripe's fixture, a
fresh payment) per customer at a fixed rate by schedule: the invoice worker issues a
receipt (``receipt.issued`` on invoices.v1), the notification worker renders the receipt
mail and its dispatcher sends it. The sender's acceptances reach the mail sink through a
pipe; the latency is accepted -> the mail's ``DATA`` complete at the server. The
database's timestamps split it: ``ledger_receipts.issued_at`` (the invoice worker's
transaction), ``deliveries.created_at`` (the notification worker's) and
``deliveries.sent_at`` (the dispatcher recording the relay's ``250``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg

from bench import cpu, e2e, events, infra, ledger_events, machine, mail, procs
from bench.e2e import Fleet, Gateway, Worker
from bench.mail_sink import MAIL_TIMEOUT_S
from billing_fleet.kafka_admin import ensure_topics
from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES
from fleet.command_settings import DevFleetSettings
from fleet.embedded import free_port
from workers.invoice.worker import NAME as INVOICE
from workers.notification.worker import NAME as NOTIFICATION

ROOT: Final = Path(__file__).resolve().parents[1]
TARGET_E2E_P99_MS: Final = 500.0
SEED_TIMEOUT_S: Final = 120.0

RECEIPT_ISSUED: Final = (
    "SELECT customer_id, issued_at AS updated_at FROM ledger_receipts"
    " WHERE customer_id = ANY($1::text[])"
)
"""Per customer (one receipt each), ``issued_at``: ``now()`` of the invoice worker's
transaction."""
_MAILS: Final = (
    "SELECT split_part(destination, '@', 1) AS customer_id, {column} AS updated_at"
    f" FROM deliveries WHERE worker = '{NOTIFICATION}' AND channel = 'email'"
    " AND split_part(destination, '@', 1) = ANY($1::text[]) AND {column} IS NOT NULL"
)
MAIL_QUEUED: Final = _MAILS.format(column="created_at")
"""The mail's delivery row: ``now()`` of the notification worker's transaction."""
MAIL_SENT: Final = _MAILS.format(column="sent_at")
"""When the dispatcher recorded the relay's answer."""


def start_sink(stack: ExitStack, workdir: Path, stdin: int) -> tuple[subprocess.Popen[bytes], int]:
    """``bench.mail_sink`` reading acceptances from ``stdin``; its SMTP port once it greets."""
    port = free_port()
    log = workdir / "mail_sink.log"
    command = [
        sys.executable,
        *("-m", "bench.mail_sink", "--port", str(port), "--out", str(workdir / "mail.json")),
    ]
    process = stack.enter_context(
        procs.running(command, log_path=log, env=infra.child_env(), stdin=stdin)
    )
    mail.wait_greeting(port, process, log)
    return process, port


def start_invoice_worker(stack: ExitStack, fleet: Fleet) -> Worker:
    extra = {
        "BILLING_WORKER_DECLARATION": "bench.parked_receipts:DECLARATION",
        "PYTHONPATH": str(ROOT),  # where bench.parked_receipts is
    }
    return e2e.start_worker(
        stack, fleet.workdir, INVOICE, fleet.bootstrap, fleet.database_url, extra
    )


def start_notification_worker(stack: ExitStack, fleet: Fleet, smtp_port: int) -> Worker:
    extra = {
        "BILLING_NOTIFICATION_SMTP_HOST": mail.HOST,
        "BILLING_NOTIFICATION_SMTP_PORT": str(smtp_port),
        "BILLING_NOTIFICATION_RECEIPT_URL": f"{fleet.gateway.base}/v1/receipts/{{number}}.pdf",
    }
    return e2e.start_worker(
        stack, fleet.workdir, NOTIFICATION, fleet.bootstrap, fleet.database_url, extra
    )


async def _count(database_url: str, query: str, *args: object) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(query, *args)
    finally:
        await conn.close()
    return count


def wait_counted(
    fleet: Fleet, workers: Sequence[Worker], query: str, arg: str, expected: int, what: str
) -> None:
    """Until ``query`` (a count, ``$1`` = ``arg``) reaches ``expected``; fails if a worker
    exits or after ``SEED_TIMEOUT_S``."""
    deadline = time.monotonic() + SEED_TIMEOUT_S
    count = 0
    while time.monotonic() < deadline:
        e2e.require_running(workers)
        count = asyncio.run(_count(fleet.database_url, query, arg))
        if count >= expected:
            return
        time.sleep(0.2)
    logs = "\n".join(procs.log_tail(w.log, 1500) for w in workers)
    raise RuntimeError(f"{what}: {count} of {expected} within {SEED_TIMEOUT_S:.0f} s:\n{logs}")


def warm_up(fleet: Fleet, workers: Sequence[Worker]) -> None:
    """One customer and one payment through the whole path, to the relay's ``250`` (both
    workers have joined their groups after it)."""
    run = events.run_token()
    now = int(time.time())
    customer = f"cus_e2ewarm{run}"
    created = ledger_events.customer_created(f"evt_e2ewarmc{run}", customer, f"user_{run}", now)
    created["data"]["object"]["email"] = ledger_events.customer_email(customer)
    e2e.post_webhook(fleet.gateway, created)
    ids = ledger_events.PaymentIds(f"warm{run}", 0)
    paid = ledger_events.intent_succeeded(f"evt_e2ewarmp{run}", customer, ids, now, now)
    e2e.post_webhook(fleet.gateway, paid)
    sent = (
        f"SELECT count(*) FROM deliveries WHERE worker = '{NOTIFICATION}'"
        " AND destination = $1 AND status = 'sent'"
    )
    address = ledger_events.customer_email(customer)
    wait_counted(fleet, workers, sent, address, 1, "the warm-up receipt mail sent")


def _send(
    gateway: Gateway, kind: str, run: str, rate: int, duration: float, out: Path
) -> list[str]:
    return [
        sys.executable,
        *("-m", "bench.e2e_client", "send", f"{gateway.base}/webhooks/stripe"),
        *("--secret", e2e.WEBHOOK_SECRET, "--kind", kind, "--run", run),
        *("--rate", str(rate), "--duration", str(duration), "--out", str(out)),
    ]


def _wait(process: subprocess.Popen[bytes], name: str, log: Path, limit: float) -> None:
    try:
        code = process.wait(limit)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{name} still running after {limit:.0f} s") from None
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}:\n{procs.log_tail(log)}")


def seed_customers(
    fleet: Fleet, workers: Sequence[Worker], run: str, rate: int, duration_s: int
) -> None:
    """``rate * duration_s`` customers of ``run`` (sent at twice the rate), known to both
    workers: the invoice worker's receipts carry their address, the notification
    worker's directory holds it."""
    count = rate * duration_s
    out, log = fleet.workdir / "seed.json", fleet.workdir / "seed.log"
    command = _send(fleet.gateway, "customer", run, 2 * rate, duration_s / 2, out)
    with procs.running(command, log_path=log, env=infra.child_env()) as sender:
        _wait(sender, "customer sender", log, duration_s + 60)
    seeded = json.loads(out.read_text())
    if seeded["accepted"] != count:
        raise RuntimeError(f"{seeded['accepted']} of {count} customers accepted: {seeded}")
    pattern = f"cus_e2e{run}%"
    for query, what in (
        ("SELECT count(*) FROM ledger_customers WHERE customer_id LIKE $1", "ledger customers"),
        ("SELECT count(*) FROM notification_contacts WHERE customer_id LIKE $1", "contacts"),
    ):
        wait_counted(fleet, workers, query, pattern, count, what)


@dataclass
class WriteEnd:
    """The write end of the pipe into the mail sink, closed once (by the sender's start,
    or at the end of the run if the sender never started)."""

    fd: int | None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def load(
    fleet: Fleet,
    sink: subprocess.Popen[bytes],
    pipe: WriteEnd,
    run: str,
    rate: int,
    duration_s: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The receipt webhooks, the sender's acceptances written into ``pipe`` for the sink;
    (the sender's summary, the sink's)."""
    workdir = fleet.workdir
    sent_path, send_log = workdir / "send.json", workdir / "send.log"
    command = _send(fleet.gateway, "receipt", run, rate, duration_s, sent_path)
    assert pipe.fd is not None
    with procs.running(command, log_path=send_log, env=infra.child_env(), stdout=pipe.fd) as sender:
        pipe.close()  # the sender holds it now: its exit ends the sink's input
        prioritized = all(e2e.prioritize(p.pid) for p in (sender, sink))
        _wait(sender, "sender", send_log, duration_s + 60)
    _wait(sink, "mail sink", workdir / "mail_sink.log", MAIL_TIMEOUT_S + 60)
    sent: dict[str, Any] = json.loads(sent_path.read_text())
    received: dict[str, Any] = json.loads((workdir / "mail.json").read_text())
    sent["prioritized"] = prioritized
    return sent, received


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if math.isfinite(value) else "never"


def _rate(received: dict[str, Any]) -> str:
    span, count = received["load_span_s"], len(received["latency_ms"])
    return f"{count / span:,.0f} mails/s" if span > 0 else "one mail"


def _stage(label: str, values: list[float]) -> str:
    if not values:
        return f"accepted -> {label}: none"
    p50, p99 = e2e.percentile(values, 50), e2e.percentile(values, 99)
    return f"accepted -> {label}: p50 {_ms(p50)}, p99 {_ms(p99)} ({len(values):,})"


def report(
    sent: dict[str, Any],
    received: dict[str, Any],
    stages: dict[str, list[float]],
    load_cpu: cpu.Usage,
    *,
    rate: int,
    batch: int,
) -> str:
    answer = sent["answer_ms"]
    latencies = [*received["latency_ms"], *[math.inf] * received["missing"]]
    p50, p99 = e2e.percentile(latencies, 50), e2e.percentile(latencies, 99)
    ratio = p99 / TARGET_E2E_P99_MS
    customers = sent["sent"]
    lines = [
        f"e2e benchmark (notification): {machine.described()}; gateway + invoice worker "
        f"(receipt PDFs parked) + notification worker (batch {batch}) subprocesses, Tansu "
        f"({BILLING_EVENTS}, {INVOICES} x{e2e.PARTITIONS}), PostgreSQL, aiosmtpd relay "
        "(its own process)",
        f"webhooks: {sent['sent']:,} payment_intent.succeeded (a fresh payment each, for "
        f"{customers:,} customers created before) at {rate:,}/s by schedule, achieved "
        f"{sent['sent'] / sent['sent_s']:,.0f}/s; {sent['accepted']:,} answered 200 "
        f"(p50 {e2e.percentile(answer, 50):.1f} ms, p99 {e2e.percentile(answer, 99):.1f} ms); "
        f"sender late {sent['late']} times (max {sent['max_late_ms']:.1f} ms)",
        f"mails: {received['mails']:,} received ({received['others']} not of the load: the "
        f"warm-up; {received['repeated']} to an address already mailed); the load's from "
        f"first to last in {received['load_span_s']:.1f} s ({_rate(received)}); sender and relay "
        + ("at nice -10" if sent["prioritized"] else "at default priority (not root)"),
        "",
        _stage(
            "receipt issued by the invoice worker (issued_at: its transaction)", stages["issued"]
        ),
        _stage(
            "receipt mail queued by the notification worker (deliveries.created_at)",
            stages["queued"],
        ),
        _stage("mail sent (deliveries.sent_at: the relay's 250 recorded)", stages["sent"]),
        f"accepted -> receipt mail received by the relay: p50 {_ms(p50)}, p99 {_ms(p99)}, "
        f"max {_ms(max(latencies, default=math.inf))} ({len(received['latency_ms']):,} "
        f"received, {received['missing']} never)"
        f"    target p99 < {TARGET_E2E_P99_MS:.0f} ms: {e2e.verdict(p99 < TARGET_E2E_P99_MS)} "
        f"(p99 / target = {ratio:.2f})",
        *load_cpu.lines(sent["accepted"], "receipt"),
        *e2e.failure_lines(sent),
    ]
    return "\n".join(line.rstrip() for line in lines)


def run(*, rate: int, duration_s: int, gateway_command: Sequence[str] | None = None) -> int:
    settings = DevFleetSettings()
    run_id = events.run_token()
    with procs.stopped_by_sigterm(), ExitStack() as stack:
        fleet = e2e.start_fleet(stack, "e2enotify", gateway_command)
        topics = [INVOICES, ENTITLEMENT_CHANGES]
        asyncio.run(ensure_topics(fleet.bootstrap, topics, e2e.PARTITIONS, 1))
        read_end, write_end = os.pipe()
        pipe = WriteEnd(write_end)
        stack.callback(pipe.close)
        try:
            sink, smtp_port = start_sink(stack, fleet.workdir, read_end)
        finally:
            os.close(read_end)  # the sink's now
        workers = [
            start_invoice_worker(stack, fleet),
            start_notification_worker(stack, fleet, smtp_port),
        ]
        warm_up(fleet, workers)
        print(f"{rate * duration_s:,} customers ...", file=sys.stderr, flush=True)
        seed_customers(fleet, workers, run_id, rate, duration_s)
        print(f"receipt webhooks at {rate}/s for {duration_s} s ...", file=sys.stderr, flush=True)
        with infra.analyzed(fleet.database_url), cpu.measured() as load_cpu:
            sent, received = load(fleet, sink, pipe, run_id, rate, duration_s)
        e2e.clients_apart(load_cpu, sent)
        # The relay ran before the phase too: only its CPU since the first acceptance.
        load_cpu.exited(cpu.RELAY, received["cpu_s"], received["load_cpu_s"])
        accepted = sent["accepted_wall_ns"]
        stages = {
            name: asyncio.run(e2e.applied_ms(fleet.database_url, accepted, query))
            for name, query in (
                ("issued", RECEIPT_ISSUED),
                ("queued", MAIL_QUEUED),
                ("sent", MAIL_SENT),
            )
        }
    batch = settings.worker_batch_max_records
    print(report(sent, received, stages, load_cpu, rate=rate, batch=batch))
    return 0
