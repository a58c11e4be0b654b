"""Ingress benchmark: verified webhooks/s against the two ceilings the gateway sits on.

(a) a bare ASGI "200" app on the gateway's server stack, (b) raw aiokafka produce of the
payload the gateway publishes, (c) ``billing-fleet gateway`` itself; then (c) at a fixed
rate for latency. Load comes from wrk, a separate process; all servers are subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import stripe
import uvicorn
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)

from api_gateway.normalize import normalize, partition_key
from api_gateway.publisher import MAX_BATCH_BYTES
from api_gateway.webhooks import CE_SOURCE
from bench import machine, plain_asgi, procs, wrk
from billing_fleet.kafka_admin import ensure_topics
from contracts import BILLING_EVENTS, cloudevent_headers
from fleet.command_settings import DevFleetSettings
from fleet.embedded import EmbeddedKafka, free_port

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "tests/fixtures/stripe/customer.subscription.updated__syncengine__1.json"
)
SECRET = "whsec_bench"
WEBHOOK_PATH = "/webhooks/stripe"
WARM_UP_S = 1
LATENCY_CONNECTIONS = 10
TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0


@dataclass(frozen=True)
class Payload:
    body: bytes  # the Stripe event as POSTed
    value: bytes  # the normalized event the gateway publishes for it
    key: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class GatewayRun:
    throughput: wrk.WrkResult
    latency: wrk.WrkResult
    answered_2xx: int  # every 2xx the gateway gave: preflight, warm-ups, measured runs
    published: int


def load_payload(path: Path) -> Payload:
    body = path.read_bytes()
    event = normalize(json.loads(body))
    headers = cloudevent_headers(event, source=CE_SOURCE)
    return Payload(
        body=body,
        value=event.model_dump_json().encode(),
        key=partition_key(event).encode(),
        headers=[(k, v.encode()) for k, v in headers.items()],
    )


def signed_headers(body: bytes) -> dict[str, str]:
    # Signed now: the gateway refuses timestamps older than 300 s, so sign per wrk run.
    signature = stripe.WebhookSignature.generate_signature_header(
        body.decode(), SECRET, timestamp=int(time.time())
    )
    return {"Content-Type": "application/json", "Stripe-Signature": signature}


class Bench:
    """Shared state of one run: the work directory and the body file wrk POSTs."""

    def __init__(self, workdir: Path, payload: Payload) -> None:
        self.workdir = workdir
        self.payload = payload
        self.body_path = workdir / "body.json"
        self.body_path.write_bytes(payload.body)

    def wrk(
        self, url: str, *, connections: int, duration_s: int, rate: float | None = None
    ) -> wrk.WrkResult:
        script = self.workdir / "post.lua"
        headers = signed_headers(self.payload.body)
        script.write_text(wrk.post_script(self.body_path, headers, rate_per_thread=rate))
        return wrk.run(url, script, connections=connections, duration_s=duration_s)

    def post_request(self, url: str) -> urllib.request.Request:
        headers = signed_headers(self.payload.body)
        return urllib.request.Request(url, data=self.payload.body, headers=headers, method="POST")


def _stack(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return next((x for x in lines if x.startswith(plain_asgi.STACK_PREFIX)), "server stack: ?")


def measure_plain_asgi(
    bench: Bench, connections: int, duration_s: int
) -> tuple[wrk.WrkResult, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    log = bench.workdir / "plain_asgi.log"
    command = [sys.executable, "-m", "bench.plain_asgi", str(port)]
    with procs.running(command, log_path=log) as process:
        procs.wait_http_ok(bench.post_request(url), process, log)
        bench.wrk(url, connections=connections, duration_s=WARM_UP_S)
        result = bench.wrk(url, connections=connections, duration_s=duration_s)
    _require_all_2xx("plain ASGI", result)
    return result, _stack(log)


async def _send_all(producer: AIOKafkaProducer, payload: Payload, count: int) -> None:
    # send() only appends to a batch (waiting when the buffer is full); gather the acks.
    futures = [
        await producer.send(BILLING_EVENTS, payload.value, key=payload.key, headers=payload.headers)
        for _ in range(count)
    ]
    await asyncio.gather(*futures)


async def measure_raw_produce(bootstrap: str, payload: Payload, count: int) -> float:
    """Messages/s of batched produce with acks=all, as the gateway's producer asks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        max_batch_size=MAX_BATCH_BYTES,  # the gateway producer's batch size
        client_id="bench-raw",
    )
    await producer.start()
    try:
        await _send_all(producer, payload, 1_000)  # warm-up: metadata, connections
        started = time.perf_counter()
        await _send_all(producer, payload, count)
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def topic_size(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # fetch metadata, so partitions_for_topic knows the topic
        partitions = [
            TopicPartition(BILLING_EVENTS, p)
            for p in consumer.partitions_for_topic(BILLING_EVENTS) or ()
        ]
        start = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        return sum(end[tp] - start[tp] for tp in partitions)
    finally:
        await consumer.stop()


def _gateway_command() -> list[str]:
    script = Path(sys.executable).with_name("billing-fleet")
    if script.exists():
        return [str(script), "gateway"]
    return [sys.executable, "-m", "fleet.cli", "gateway"]


def _gateway_env(bootstrap: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BILLING_DATABASE_URL")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        BILLING_STRIPE_WEBHOOK_SECRETS=SECRET,
        BILLING_GATEWAY_HOST="127.0.0.1",
        BILLING_GATEWAY_PORT=str(port),
    )
    return env


def _check_published(answer: bytes) -> None:
    reply = json.loads(answer)
    if reply.get("ignored") or "id" not in reply:
        raise RuntimeError(f"the gateway did not publish the fixture event: {reply}")


def measure_gateway(
    bench: Bench, bootstrap: str, connections: int, duration_s: int, rate: int
) -> GatewayRun:
    port = free_port()
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    log = bench.workdir / "gateway.log"
    before = asyncio.run(topic_size(bootstrap))
    with procs.running(
        _gateway_command(), log_path=log, env=_gateway_env(bootstrap, port)
    ) as process:
        # 2xx only once the publisher has connected to the broker (503 before).
        _check_published(procs.wait_http_ok(bench.post_request(url), process, log))
        warm_up = bench.wrk(url, connections=connections, duration_s=WARM_UP_S)
        throughput = bench.wrk(url, connections=connections, duration_s=duration_s)
        # Closed loop: a stalled server delays the next sends too, so wrk's percentiles
        # omit the waiting a real open-loop sender would see (coordinated omission).
        latency = bench.wrk(url, connections=LATENCY_CONNECTIONS, duration_s=duration_s, rate=rate)
    # After the stop: uvicorn has drained, every answered request is published.
    runs = (warm_up, throughput, latency)
    for name, result in zip(("warm-up", "throughput", "latency"), runs, strict=True):
        _require_all_2xx(f"gateway {name}", result)
    return GatewayRun(
        throughput=throughput,
        latency=latency,
        answered_2xx=1 + sum(r.requests for r in runs),
        published=asyncio.run(topic_size(bootstrap)) - before,
    )


def _require_all_2xx(name: str, result: wrk.WrkResult) -> None:
    if result.failed:
        raise RuntimeError(
            f"{name}: {result.non_2xx_3xx} non-2xx/3xx responses, "
            f"{result.socket_errors} socket errors; the figures are void:\n{result.report}"
        )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


@dataclass(frozen=True)
class Results:
    plain: wrk.WrkResult
    stack: str
    produce_per_s: float
    gateway: GatewayRun


def report(r: Results, *, duration_s: int, connections: int, messages: int, rate: int) -> str:
    a, c, fixed = r.plain, r.gateway.throughput, r.gateway.latency
    ceiling = min(a.requests_per_s, r.produce_per_s)
    ratio = c.requests_per_s / ceiling
    row = "{:<44} {:>14} {:>10} {:>10}"
    lines = [
        f"ingress benchmark: {machine.described()}, wrk -t1 -c{connections} -d{duration_s}s, "
        f"Tansu broker, {FIXTURE.name} ({len(FIXTURE.read_bytes()):,} B)",
        f"{r.stack} (uvicorn {uvicorn.__version__} inside asyncio.run, as the gateway runs)",
        "",
        row.format("", "throughput", "p50", "p99"),
        row.format(
            "(a) plain ASGI 200 (uvicorn, same stack)",
            f"{a.requests_per_s:,.0f} req/s",
            f"{a.p50_ms:.2f} ms",
            f"{a.p99_ms:.2f} ms",
        ),
        row.format(
            f"(b) raw aiokafka produce x{messages:,}, acks=all",
            f"{r.produce_per_s:,.0f} msg/s",
            "",
            "",
        ),
        row.format(
            "(c) billing-fleet gateway, signed webhooks",
            f"{c.requests_per_s:,.0f} req/s",
            f"{c.p50_ms:.2f} ms",
            f"{c.p99_ms:.2f} ms",
        ),
        "",
        f"c / min(a, b) = {c.requests_per_s:,.0f} / {ceiling:,.0f} = {ratio:.2f}"
        f"    target >= {TARGET_RATIO}: {_verdict(ratio >= TARGET_RATIO)}",
        f"(c) at {rate:,} req/s ({LATENCY_CONNECTIONS} connections, paced): achieved "
        f"{fixed.requests_per_s:,.0f} req/s, p50 {fixed.p50_ms:.2f} ms, p99 {fixed.p99_ms:.2f} ms"
        f"    target p99 < {TARGET_P99_MS:.0f} ms: {_verdict(fixed.p99_ms < TARGET_P99_MS)}",
        f"checks: every response 2xx; {r.gateway.published:,} events on {BILLING_EVENTS} for "
        f"{r.gateway.answered_2xx:,} gateway 2xx answers",
    ]
    return "\n".join(line.rstrip() for line in lines)


def _check_counts(gateway: GatewayRun) -> None:
    # More events than counted 2xx is expected: wrk does not count the requests still in
    # flight when a run ends, though the gateway answers and publishes them. Fewer is loss.
    if gateway.published < gateway.answered_2xx:
        raise RuntimeError(
            f"{gateway.published} events on {BILLING_EVENTS} for {gateway.answered_2xx} 2xx "
            "answers: acknowledged webhooks are missing from the topic"
        )


def run(*, duration_s: int, connections: int, messages: int, rate: int) -> int:
    try:
        wrk.executable()
    except wrk.WrkError as exc:
        print(f"bench ingress: {exc}", file=sys.stderr)
        return 2
    settings = DevFleetSettings()
    payload = load_payload(FIXTURE)
    with procs.stopped_by_sigterm(), ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingress-")))
        bench = Bench(workdir, payload)
        kafka = stack.enter_context(EmbeddedKafka())
        bootstrap = kafka.bootstrap_servers
        asyncio.run(
            ensure_topics(
                bootstrap,
                [BILLING_EVENTS],
                settings.kafka_topic_partitions,
                settings.kafka_topic_replication_factor,
            )
        )
        print("(a) plain ASGI ...", file=sys.stderr, flush=True)
        plain, stack_line = measure_plain_asgi(bench, connections, duration_s)
        print("(b) raw aiokafka produce ...", file=sys.stderr, flush=True)
        produce_per_s = asyncio.run(measure_raw_produce(bootstrap, payload, messages))
        print("(c) gateway ...", file=sys.stderr, flush=True)
        gateway = measure_gateway(bench, bootstrap, connections, duration_s, rate)
    _check_counts(gateway)
    results = Results(plain, stack_line, produce_per_s, gateway)
    print(
        report(
            results, duration_s=duration_s, connections=connections, messages=messages, rate=rate
        )
    )
    return 0
