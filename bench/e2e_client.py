"""Load generator and poller of the end-to-end benchmark: two processes, one pipe.

``send``: POSTs signed ``customer.subscription.created`` webhooks, each for a fresh
customer, at a fixed rate by schedule (open loop: a slow answer never delays the next
send), and writes ``CUSTOMER ACCEPTED_NS`` to stdout for each 200 (``time.monotonic_ns``,
one clock for every process of the machine); its summary also keeps each acceptance's
wall-clock time, to compare with the worker's ``entitlements.updated_at``.

``poll``: reads those lines from stdin and polls
``GET /v1/customers/{customer}/entitlements/{feature}`` for each, every interval, oldest
first, with a bound on polls in flight, until it answers ``entitled: true``; the latency
is accepted -> that answer received.

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
from typing import Any
from urllib.parse import urlsplit

import stripe

from bench import events
from bench.http_client import Client
from billing_fleet.signals import run_event_loop

SEND_CONNECTIONS = 64
POLL_TIMEOUT_S = 120.0  # after the last acceptance: events not readable by then are missing


# -- send --------------------------------------------------------------------------------------


def webhooks(count: int, secret: str) -> list[tuple[str, bytes, str]]:
    """(customer, body, Stripe-Signature) of each webhook; signed now (300 s tolerance)."""
    run = events.run_token()
    now = int(time.time())
    out = []
    for i in range(count):
        customer = f"cus_e2e{run}{i:07d}"
        body = json.dumps(
            events.stripe_event(
                event_id=f"evt_e2e{run}{i:09d}",
                customer_id=customer,
                subscription_id=f"sub_e2e{run}{i:07d}",
                price_id="price_bench_pro",  # grants events.FEATURE
                quantity=1,
                created=now,
                first=True,
            )
        ).encode()
        signature = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret, timestamp=now
        )
        out.append((customer, body, signature))
    return out


@dataclass
class SendStats:
    accepted: int = 0
    failed: list[str] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    accepted_wall_ns: dict[str, int] = field(default_factory=dict)
    late_ms: list[float] = field(default_factory=list)  # sender behind its schedule


async def send(url: str, secret: str, rate: int, duration_s: float) -> dict[str, Any]:
    client = Client(url, SEND_CONNECTIONS)
    path = urlsplit(url).path
    batch = [
        (customer, client.request("POST", path, _webhook_headers(sig), body))
        for customer, body, sig in webhooks(int(rate * duration_s), secret)
    ]
    stats = SendStats()

    async def post(customer: str, request: bytes) -> None:
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
        sys.stdout.write(f"{customer} {accepted}\n")
        sys.stdout.flush()

    tasks = []
    start = time.monotonic() + 0.05
    for i, (customer, request) in enumerate(batch):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            stats.late_ms.append(-delay * 1e3)
        tasks.append(asyncio.create_task(post(customer, request)))
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


async def poll(url_template: str, token: str, interval_ms: float, in_flight: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: dict[str, tuple[int, int]] = {}  # customer -> (accepted_ns, next poll ns)
    busy: set[str] = set()
    checks: set[asyncio.Task[None]] = set()
    latencies: list[float] = []
    polls = errors = 0
    interval_ns = int(interval_ms * 1e6)
    limit = asyncio.Semaphore(in_flight)
    done_reading = asyncio.Event()
    started = time.monotonic()

    async def read_lines() -> None:
        while line := await reader.readline():
            customer, accepted = line.decode().split()
            pending[customer] = (int(accepted), 0)
        done_reading.set()

    async def check(customer: str) -> None:
        nonlocal polls, errors
        accepted, _ = pending[customer]
        request = client.request("GET", path_template.format(customer=customer), headers)
        try:
            status, body = await client.send(request)
        except OSError:
            status, body = 0, b""
        answered = time.monotonic_ns()
        polls += 1
        try:
            if status == 200 and b'"entitled":true' in body:
                latencies.append((answered - accepted) / 1e6)
                del pending[customer]
            else:
                errors += status != 200
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
    p = modes.add_parser("poll")
    p.add_argument("url_template", help="with {customer}")
    p.add_argument("--token", required=True)
    p.add_argument("--interval-ms", type=float, required=True)
    p.add_argument("--in-flight", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {}

    async def main() -> None:
        if args.mode == "send":
            summary.update(await send(args.url, args.secret, args.rate, args.duration))
        else:
            summary.update(
                await poll(args.url_template, args.token, args.interval_ms, args.in_flight)
            )

    run_event_loop(main())
    args.out.write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
