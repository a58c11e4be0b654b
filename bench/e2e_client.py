"""Load generator and poller of the end-to-end benchmark: two processes, one pipe.

``send``: POSTs signed webhooks, each for a fresh customer, at a fixed rate by schedule
(open loop: a slow answer never delays the next send): ``--kind entitlement``,
``customer.subscription.created`` on a plan granting the bench feature; ``--kind
invoice``, ``invoice.paid`` of a fresh invoice (``bench.ledger_events``); ``--kind
customer``, ``customer.created`` with an e-mail address, and ``--kind receipt``,
``payment_intent.succeeded`` of a fresh payment, for the customers one ``--run`` names
(created first: the receipt's mail goes to that address). It writes
``CUSTOMER OBJECT ACCEPTED_NS`` to stdout for each 200 (the object: the subscription or
the invoice; ``time.monotonic_ns``, one clock for every process of the machine); its
summary also keeps each acceptance's wall-clock time, to compare with the worker's
``updated_at``.

``poll``: reads those lines from stdin and polls the URL template (``{customer}`` and
``{object}`` filled in, e.g. ``GET /v1/customers/{customer}/entitlements/{feature}`` or
``GET /v1/customers/{customer}/invoices/{object}``) for each, every interval, oldest
first, with a bound on polls in flight, until it answers 200 with ``--ready`` in its body
(``"entitled":true``, ``"status":"paid"``); ``--not-yet`` statuses (404: no such record
yet) are counted apart from errors. The latency is accepted -> that answer received.

Both write a JSON summary to the file named by ``--out``.
Usage: ``python -m bench.e2e_client send|poll ...`` (started by ``bench.e2e``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import stripe

from bench import events, ledger_events
from bench.cpu import own_cpu_seconds
from bench.http_client import Client
from billing_fleet.signals import run_event_loop

SEND_CONNECTIONS = 64
POLL_TIMEOUT_S = 120.0  # after the last acceptance: events not readable by then are missing


# -- send --------------------------------------------------------------------------------------


def _subscription_created(run: str, i: int, now: int) -> tuple[str, str, dict[str, Any]]:
    customer, subscription = f"cus_e2e{run}{i:07d}", f"sub_e2e{run}{i:07d}"
    event = events.stripe_event(
        event_id=f"evt_e2e{run}{i:09d}",
        customer_id=customer,
        subscription_id=subscription,
        price_id="price_bench_pro",  # grants events.FEATURE
        quantity=1,
        created=now,
        first=True,
    )
    return customer, subscription, event


def _invoice_paid(run: str, i: int, now: int) -> tuple[str, str, dict[str, Any]]:
    customer, ids = f"cus_e2e{run}{i:07d}", ledger_events.PaymentIds(f"e2e{run}", i)
    event = ledger_events.invoice_paid(f"evt_e2e{run}{i:09d}", customer, ids, now)
    return customer, ids.invoice, event


def _customer_created(run: str, i: int, now: int) -> tuple[str, str, dict[str, Any]]:
    customer = f"cus_e2e{run}{i:07d}"
    event = ledger_events.customer_created(f"evt_e2ec{run}{i:09d}", customer, f"user_{run}", now)
    event["data"]["object"]["email"] = ledger_events.customer_email(customer)
    return customer, customer, event


def _intent_succeeded(run: str, i: int, now: int) -> tuple[str, str, dict[str, Any]]:
    customer, ids = f"cus_e2e{run}{i:07d}", ledger_events.PaymentIds(f"e2e{run}", i)
    event = ledger_events.intent_succeeded(f"evt_e2e{run}{i:09d}", customer, ids, now, now)
    return customer, ids.intent, event


KINDS: Final = {
    "entitlement": _subscription_created,
    "invoice": _invoice_paid,
    "customer": _customer_created,  # with an e-mail address (ledger_events.customer_email)
    "receipt": _intent_succeeded,  # a succeeded payment: a receipt for its customer
}


def webhooks(
    count: int, secret: str, kind: str = "entitlement", run: str | None = None
) -> list[tuple[str, str, bytes, str]]:
    """(customer, object, body, Stripe-Signature) of each webhook of ``kind``; signed now
    (300 s tolerance). ``run`` names the customers (fresh ones unless given: ``customer``
    then ``receipt`` with one ``run`` pay for customers created first)."""
    run = run or events.run_token()
    now = int(time.time())
    out = []
    for i in range(count):
        customer, obj, event = KINDS[kind](run, i, now)
        body = json.dumps(event).encode()
        signature = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret, timestamp=now
        )
        out.append((customer, obj, body, signature))
    return out


@dataclass
class SendStats:
    accepted: int = 0
    failed: list[str] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    accepted_wall_ns: dict[str, int] = field(default_factory=dict)
    late_ms: list[float] = field(default_factory=list)  # sender behind its schedule


async def send(
    url: str,
    secret: str,
    rate: int,
    duration_s: float,
    kind: str = "entitlement",
    run: str | None = None,
) -> dict[str, Any]:
    client = Client(url, SEND_CONNECTIONS)
    path = urlsplit(url).path
    batch = [
        (customer, obj, client.request("POST", path, _webhook_headers(sig), body))
        for customer, obj, body, sig in webhooks(int(rate * duration_s), secret, kind, run)
    ]
    stats = SendStats()

    async def post(customer: str, obj: str, request: bytes) -> None:
        started = time.monotonic_ns()
        try:
            status, text = await client.send(request)
        except OSError as exc:  # ConnectionError included
            stats.failed.append(repr(exc))
            return
        accepted = time.monotonic_ns()
        if status != 200:
            stats.failed.append(f"{status} {text[:200]!r}")
            return
        stats.accepted += 1
        stats.accepted_wall_ns[customer] = time.time_ns()
        stats.answer_ms.append((accepted - started) / 1e6)
        # A line per acceptance, at once (the poller starts its clock from it); the poller
        # drains the pipe continuously, so the write never blocks.
        sys.stdout.write(f"{customer} {obj} {accepted}\n")
        sys.stdout.flush()

    tasks = []
    start = time.monotonic() + 0.05
    for i, (customer, obj, request) in enumerate(batch):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            stats.late_ms.append(-delay * 1e3)
        tasks.append(asyncio.create_task(post(customer, obj, request)))
    sent_s = time.monotonic() - start
    await asyncio.gather(*tasks)
    await client.close()
    return {
        "sent": len(batch),
        "sent_s": sent_s,
        "accepted": stats.accepted,
        "failed": stats.failed[:10],
        "failures": len(stats.failed),
        "answer_ms": stats.answer_ms,
        "accepted_wall_ns": stats.accepted_wall_ns,
        "late": len(stats.late_ms),
        "max_late_ms": max(stats.late_ms, default=0.0),
    }


def _webhook_headers(signature: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Stripe-Signature": signature}


# -- poll --------------------------------------------------------------------------------------


async def poll(
    url_template: str,
    token: str,
    interval_ms: float,
    in_flight: int,
    ready: bytes = b'"entitled":true',
    not_yet: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: dict[str, tuple[int, int]] = {}  # customer -> (accepted_ns, next poll ns)
    objects: dict[str, str] = {}  # customer -> its object (subscription, invoice)
    busy: set[str] = set()
    checks: set[asyncio.Task[None]] = set()
    latencies: list[float] = []
    polls = errors = early = 0
    interval_ns = int(interval_ms * 1e6)
    limit = asyncio.Semaphore(in_flight)
    done_reading = asyncio.Event()
    started = time.monotonic()

    async def read_lines() -> None:
        while line := await reader.readline():
            customer, obj, accepted = line.decode().split()
            objects[customer] = obj
            pending[customer] = (int(accepted), 0)
        done_reading.set()

    async def check(customer: str) -> None:
        nonlocal polls, errors, early
        accepted, _ = pending[customer]
        path = path_template.format(customer=customer, object=objects[customer])
        request = client.request("GET", path, headers)
        try:
            status, body = await client.send(request)
        except OSError:
            status, body = 0, b""
        answered = time.monotonic_ns()
        polls += 1
        try:
            if status == 200 and ready in body:
                latencies.append((answered - accepted) / 1e6)
                del pending[customer]
            else:
                early += status in not_yet
                errors += status != 200 and status not in not_yet
                pending[customer] = (accepted, answered + interval_ns)
        finally:
            busy.discard(customer)
            limit.release()

    headers = {"Authorization": f"Bearer {token}"}
    client = Client(url_template, in_flight)
    path_template = urlsplit(url_template).path
    try:
        reading = asyncio.create_task(read_lines())
        deadline: float | None = None
        while pending or not done_reading.is_set():
            if done_reading.is_set() and deadline is None:
                deadline = time.monotonic() + POLL_TIMEOUT_S
            if deadline is not None and time.monotonic() > deadline:
                break
            now = time.monotonic_ns()
            due = [c for c, (_, at) in pending.items() if at <= now and c not in busy]
            for customer in due:  # insertion order: oldest acceptance first
                await limit.acquire()
                busy.add(customer)
                task = asyncio.create_task(check(customer))
                checks.add(task)
                task.add_done_callback(checks.discard)
            await asyncio.sleep(min(interval_ms, 2.0) / 1e3)
        await reading
        await asyncio.gather(*checks)
    finally:
        await client.close()
    return {
        "latency_ms": latencies,
        "missing": len(pending),
        "polls": polls,
        "errors": errors,
        "not_yet": early,
        "poll_s": time.monotonic() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e_client")
    modes = parser.add_subparsers(dest="mode", required=True)
    s = modes.add_parser("send")
    s.add_argument("url")
    s.add_argument("--secret", required=True)
    s.add_argument("--rate", type=int, required=True)
    s.add_argument("--duration", type=float, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--kind", choices=sorted(KINDS), default="entitlement")
    s.add_argument("--run", help="names the customers (default: fresh ones)")
    p = modes.add_parser("poll")
    p.add_argument("url_template", help="with {customer} and maybe {object}")
    p.add_argument("--token", required=True)
    p.add_argument("--interval-ms", type=float, required=True)
    p.add_argument("--in-flight", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ready", default='"entitled":true', help="in a 200's body: readable")
    p.add_argument(
        "--not-yet", type=int, action="append", default=[], help="status meaning not yet"
    )
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {}

    async def main() -> None:
        if args.mode == "send":
            summary.update(
                await send(args.url, args.secret, args.rate, args.duration, args.kind, args.run)
            )
        else:
            summary.update(
                await poll(
                    args.url_template,
                    args.token,
                    args.interval_ms,
                    args.in_flight,
                    args.ready.encode(),
                    frozenset(args.not_yet),
                )
            )

    run_event_loop(main())
    summary["cpu_s"] = own_cpu_seconds()  # counted apart from the bench driver's (bench.cpu)
    args.out.write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
