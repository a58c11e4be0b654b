"""Deliveries benchmark: webhooks/s through the dispatcher against a raw HTTP client, then
mails/s through the SMTP channel against raw aiosmtplib (``bench.mail``).

A local HTTP server (``bench.plain_asgi``: the gateway's uvicorn stack answering 200 after
reading the body) receives N POSTs of the same JSON body, with a ``webhook-id`` each, at
the same concurrency, from (a) a bare ``httpx.AsyncClient`` (one shared client, a fixed
number of coroutines), and (b) the worker runtime's ``Dispatcher`` over the HTTP channel,
on rows written beforehand to a fresh migrated database: claims, sends and recorded
results included. (b) is timed from its start to the last row's ``sent_at``. (a) and (b)
alternate for several rounds; the ratio is the median of the rounds' b/a (a shared VM's
speed drifts); (b) lets all its slots go to the one receiver
(``per_destination`` = the concurrency). Then, at the default per-destination limit
(``BILLING_DELIVERY_PER_DESTINATION_CONCURRENCY``): (c) the dispatcher on 2N rows of which
half go to a second endpoint that is down (connection refused, retried on the channel's
backoff): the up endpoint's deliveries/s while the other is down; (d) the same with the
second endpoint hanging (it accepts the connection and reads the request, never answers:
each send to it holds a slot for the whole 10 s HTTP timeout).

Signed webhooks (``signed_rounds``): (e) a raw httpx client posting the notification
worker's signed webhooks (a CloudEvent body, its ``webhook-timestamp`` and
``webhook-signature`` made per request with ``standardwebhooks``) against (f) the
dispatcher over the ``SignedWebhookSender`` (the endpoint looked up in its file, signed
per attempt, its health written in the background), alternating as (a) and (b).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import asyncpg
import httpx
import yaml
from pydantic_core import to_json

from api_gateway.normalize import normalize
from api_gateway.webhooks import CE_SOURCE
from bench import infra, procs
from bench.events import FIXTURES
from billing_fleet.db import create_pool
from billing_fleet.migrate import migrate
from billing_fleet.signals import run_event_loop
from fleet.embedded import free_port
from workers.notification.webhooks import CHANNEL as WEBHOOK_CHANNEL
from workers.notification.webhooks.endpoints import EndpointsFile
from workers.notification.webhooks.payload import CONTENT_TYPE, ENDPOINT_KEY, cloudevent_payload
from workers.notification.webhooks.sender import SignedWebhookSender, webhook_policy
from workers.notification.webhooks.signing import signed_headers
from workers.runtime.declaration import RUNTIME_MIGRATIONS
from workers.runtime.deliveries.channel import Sender
from workers.runtime.deliveries.dispatcher import Dispatcher
from workers.runtime.deliveries.http import ID_HEADER, HttpSender
from workers.runtime.deliveries.model import Delivery, RetryPolicy
from workers.runtime.deliveries.store import write_deliveries
from workers.runtime.settings import RuntimeSettings

TARGET_RATIO = 0.5
BODY = b'{"type":"invoice.paid","id":"evt_bench","data":{"amount":1999,"currency":"eur"}}'
HEADERS = {"content-type": "application/json"}
WRITE_CHUNK = 2_000
PER_DESTINATION: int = RuntimeSettings.model_fields["delivery_per_destination_concurrency"].default


class Hanging:
    """A loopback endpoint that accepts, reads, and never answers (until closed)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", self.port)
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)


Signer = Callable[[str], Mapping[str, str]]
"""A request's extra headers, from its ``webhook-id`` (signed webhooks' signature)."""


class BenchChannel(NamedTuple):
    """What the dispatcher sends through: its channel name and sender, and the row of
    the ``i``-th delivery to a URL (the plain HTTP channel's when none is given)."""

    name: str
    sender: Sender
    row: Callable[[str, str, int], Delivery]  # (worker, url, i)


async def raw_client(
    url: str, count: int, concurrency: int, body: bytes = BODY, sign: Signer | None = None
) -> float:
    """(a): deliveries/s of ``count`` POSTs from ``concurrency`` coroutines, one client
    (each request signed by ``sign`` when given: (e))."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        ids = iter(range(count))

        async def sender() -> None:
            for i in ids:
                key = f"raw-{i}"
                headers = {**HEADERS, ID_HEADER: key, **(sign(key) if sign else {})}
                response = await client.post(url, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"raw client got HTTP {response.status_code}")

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return count / (time.perf_counter() - start)


def _http_row(worker: str, url: str, i: int) -> Delivery:
    return Delivery("http", url, f"{worker}-{i}", BODY, HEADERS)


async def _write_rows(
    database_url: str,
    worker: str,
    urls: Sequence[str],
    count: int,
    row: Callable[[str, str, int], Delivery] = _http_row,
) -> None:
    await write_rows(
        database_url, worker, [row(worker, urls[i % len(urls)], i) for i in range(count)]
    )


async def write_rows(database_url: str, worker: str, rows: Sequence[Delivery]) -> None:
    """Insert ``rows`` as ``worker``'s, a few thousand per transaction."""
    conn = await asyncpg.connect(database_url)
    try:
        for first in range(0, len(rows), WRITE_CHUNK):
            async with conn.transaction():
                await write_deliveries(conn, worker, rows[first : first + WRITE_CHUNK])
    finally:
        await conn.close()


async def dispatched(
    database_url: str,
    worker: str,
    urls: Sequence[str],
    count: int,
    concurrency: int,
    timeout: float,
    per_destination: int = PER_DESTINATION,
    channel: BenchChannel | None = None,
) -> tuple[float, int]:
    """(b)/(c)/(d)/(f): the first endpoint's deliveries/s through a dispatcher (over the
    HTTP channel unless ``channel`` is given), from its start to its last row's
    ``sent_at``; and how many attempts the other endpoints cost."""
    if channel is None:
        policy = RetryPolicy((1.0, 5.0, 30.0), 10)
        http = HttpSender(policy, timeout_seconds=10.0, max_connections=concurrency)
        channel = BenchChannel("http", http, _http_row)
    await _write_rows(database_url, worker, urls, count, channel.row)
    up = urls[0]
    expect = sum(1 for i in range(count) if urls[i % len(urls)] == up)
    return await timed_dispatch(
        database_url,
        worker,
        {channel.name: channel.sender},
        expect,
        concurrency=concurrency,
        per_destination=per_destination,
        timeout=timeout,
        destination=up,
    )


async def timed_dispatch(
    database_url: str,
    worker: str,
    channels: Mapping[str, Sender],
    expect: int,
    *,
    concurrency: int,
    per_destination: int,
    timeout: float,
    destination: str | None = None,
) -> tuple[float, int]:
    """Run a dispatcher over ``worker``'s rows (written beforehand) until ``expect`` of
    them (to ``destination``, if given) are sent: their rate from its start to the last
    one's ``sent_at``, and the attempts at any other destination. Closes the senders."""
    pool = await create_pool(database_url, max_size=10, connect_timeout=5.0)
    dispatcher = Dispatcher(
        pool,
        channels,
        worker=worker,
        concurrency=concurrency,
        per_destination=per_destination,
        lease_seconds=60.0,
        db_timeout=5.0,
    )
    try:
        started = time.time()
        task = asyncio.create_task(dispatcher.run())
        deadline = time.monotonic() + timeout
        while True:
            row = await pool.fetchrow(
                "SELECT count(*), extract(epoch FROM max(sent_at)) FROM deliveries"
                " WHERE worker = $1 AND ($2::text IS NULL OR destination = $2)"
                " AND status = 'sent'",
                worker,
                destination,
            )
            assert row is not None
            sent, last = row
            if sent >= expect:
                break
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"dispatcher sent {sent} of {expect} within {timeout:.0f} s")
            await asyncio.sleep(0.1)
        others = await pool.fetchval(
            "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.worker = $1 AND d.destination <> $2",
            worker,
            destination or "",
        )
        dispatcher.drain_until(asyncio.get_running_loop().time())  # cut hanging sends off
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        for sender in channels.values():
            await sender.aclose()
        await pool.close()
    return expect / (float(last) - started), int(others) if destination else 0


def run(*, count: int, mails: int, concurrency: int, rounds: int, timeout: float) -> int:
    from bench import mail  # it builds on this module's helpers

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dl-")))
        server_url = infra.postgres_server(stack, workdir)
        database_url = stack.enter_context(infra.fresh_database(server_url, "deliveries"))
        port = free_port()
        log = workdir / "server.log"
        server = stack.enter_context(
            procs.running([sys.executable, "-m", "bench.plain_asgi", str(port)], log_path=log)
        )
        url = f"http://127.0.0.1:{port}/hook"
        procs.wait_http_ok(urllib.request.Request(url, data=b"{}"), server, log)
        down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there

        raws: list[float] = []
        dispatches: list[float] = []
        results: dict[str, tuple[float, int]] = {}
        signed: dict[str, list[float]] = {}

        async def measure() -> None:
            for round_ in range(rounds):
                raws.append(await raw_client(url, count, concurrency))
                rate, _ = await dispatched(
                    database_url, f"bench-{round_}", [url], count, concurrency, timeout, concurrency
                )
                dispatches.append(rate)
            results["down"] = await dispatched(
                database_url, "bench-down", [url, down], count * 2, concurrency, timeout
            )
            async with Hanging() as hanging:
                results["hang"] = await dispatched(
                    database_url, "bench-hang", [url, hanging], count * 2, concurrency, timeout
                )
            signed["raw"], signed["sent"] = await signed_rounds(
                workdir, database_url, url, count, concurrency, rounds, timeout
            )

        print(
            f"{count:,} POSTs per run, concurrency {concurrency}, {rounds} rounds ...",
            file=sys.stderr,
            flush=True,
        )
        run_event_loop(measure())
        if server.poll() is not None:
            raise RuntimeError(f"the HTTP server stopped:\n{procs.log_tail(log)}")
        ratios = [b / a for a, b in zip(raws, dispatches, strict=True)]
        ratio = statistics.median(ratios)
        _print(raws, dispatches, ratios, ratio, count, results["down"], results["hang"])
        _print_signed(signed["raw"], signed["sent"])
        if mails:
            relay = mail.relay_server(stack, workdir)
            print(
                f"{mails:,} mails per run, concurrency {concurrency}, {rounds} rounds ...",
                file=sys.stderr,
                flush=True,
            )
            figures: list[mail.MailFigures] = []

            async def measure_mail() -> None:
                figures.append(
                    await mail.measure(
                        database_url,
                        relay,
                        count=mails,
                        concurrency=concurrency,
                        rounds=rounds,
                        timeout=timeout,
                    )
                )

            run_event_loop(measure_mail())
            print()
            mail.report(figures[0], mails, concurrency)
    return 0


def _print(
    raws: Sequence[float],
    dispatches: Sequence[float],
    ratios: Sequence[float],
    ratio: float,
    count: int,
    down: tuple[float, int],
    hang: tuple[float, int],
) -> None:
    def cells(values: Sequence[float], fmt: str) -> str:
        return "".join(f"{v:{fmt}}" for v in values)

    width = 7 * len(raws)
    print(f"{'deliveries/s':<52}{'per round':<{width}}   best")
    print(
        f"{'(a) raw httpx client, same requests and concurrency':<52}"
        f"{cells(raws, '7,.0f')}   {max(raws):,.0f}"
    )
    print(
        f"{'(b) dispatcher: claim, send, record':<52}"
        f"{cells(dispatches, '7,.0f')}   {max(dispatches):,.0f}"
    )
    print(f"{'b / a':<52}{cells(ratios, '7.2f')}   {max(ratios):.2f}")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"b / a = median of the rounds' ratios = {ratio:.2f}    target >= {TARGET_RATIO}: {verdict}"
    )
    print(
        f"(c) one of two endpoints down ({count:,} rows each, {PER_DESTINATION} slots per "
        f"destination): the up one at {down[0]:,.0f} deliveries/s, {down[1]:,} refused "
        "attempts at the other"
    )
    print(
        f"(d) one of two endpoints hangs ({count:,} rows each, {PER_DESTINATION} slots per "
        f"destination): the up one at {hang[0]:,.0f} deliveries/s, {hang[1]:,} timed-out "
        "attempts at the other"
    )


# -- signed webhooks ---------------------------------------------------------------------

BENCH_ENDPOINT = "bench"
WEBHOOK_FIXTURE = FIXTURES / "invoice.paid__rubymock__1.json"


def _webhook_body() -> bytes:
    """What the notification worker sends for an ``invoice.paid``: its CloudEvent."""
    event = normalize(json.loads(WEBHOOK_FIXTURE.read_text()))
    return to_json(cloudevent_payload(event, source=CE_SOURCE))


def _signer(secret: str, body: bytes) -> Signer:
    """(e)'s headers: signed per request at its own time, as the sender signs an attempt."""
    text = body.decode()

    def sign(key: str) -> Mapping[str, str]:
        signed = signed_headers([secret], key, datetime.now(UTC), text)
        return {"content-type": CONTENT_TYPE, **signed}

    return sign


def _webhook_channel(
    endpoints: EndpointsFile, database_url: str, worker: str, concurrency: int, body: bytes
) -> BenchChannel:
    policy = webhook_policy([1.0, 5.0, 30.0])
    http = HttpSender(policy, timeout_seconds=10.0, max_connections=concurrency)
    sender = SignedWebhookSender(endpoints, http, database_url, worker=worker, db_timeout=5.0)

    def row(worker: str, url: str, i: int) -> Delivery:
        return Delivery(
            WEBHOOK_CHANNEL,
            url,
            f"{BENCH_ENDPOINT}:{worker}-{i}",
            body,
            {"content-type": CONTENT_TYPE},
            {ENDPOINT_KEY: BENCH_ENDPOINT},
        )

    return BenchChannel(WEBHOOK_CHANNEL, sender, row)


async def signed_rounds(
    workdir: Path,
    database_url: str,
    url: str,
    count: int,
    concurrency: int,
    rounds: int,
    timeout: float,
) -> tuple[list[float], list[float]]:
    """(e) and (f), alternating for ``rounds``: webhooks/s of each."""
    await migrate(database_url, (RUNTIME_MIGRATIONS, "workers.notification"))
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    path = workdir / "webhook-endpoints.yaml"
    endpoint = {"id": BENCH_ENDPOINT, "url": url, "secrets": [secret]}
    path.write_text(yaml.safe_dump({"endpoints": [endpoint]}))
    endpoints = EndpointsFile(path)
    body = _webhook_body()
    raws: list[float] = []
    sent: list[float] = []
    for round_ in range(rounds):
        raws.append(await raw_client(url, count, concurrency, body, _signer(secret, body)))
        worker = f"bench-signed-{round_}"
        channel = _webhook_channel(endpoints, database_url, worker, concurrency, body)
        rate, _ = await dispatched(
            database_url, worker, [url], count, concurrency, timeout, concurrency, channel
        )
        sent.append(rate)
    return raws, sent


def _print_signed(raws: Sequence[float], sent: Sequence[float]) -> None:
    ratios = [f / e for e, f in zip(raws, sent, strict=True)]
    ratio = statistics.median(ratios)

    def cells(values: Sequence[float], fmt: str) -> str:
        return "".join(f"{v:{fmt}}" for v in values)

    width = 7 * len(raws)
    print(f"{'signed webhooks/s':<52}{'per round':<{width}}   best")
    print(
        f"{'(e) raw httpx client, signing each request':<52}"
        f"{cells(raws, '7,.0f')}   {max(raws):,.0f}"
    )
    print(f"{'(f) dispatcher, SignedWebhookSender':<52}{cells(sent, '7,.0f')}   {max(sent):,.0f}")
    print(f"{'f / e':<52}{cells(ratios, '7.2f')}   {max(ratios):.2f}")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"f / e = median of the rounds' ratios = {ratio:.2f}    target >= {TARGET_RATIO}: {verdict}"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(count=5_000, mails=2_000, concurrency=16, rounds=3, timeout=300.0))
