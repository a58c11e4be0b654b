"""What a consumer's waits cost on the embedded broker (``bench fetch-wait``).

Two waits set a worker's pickup delay and its idle cost. The fetch wait
(``BILLING_WORKER_FETCH_WAIT_MS``): Tansu answers a fetch that finds no records only after
a good part of it, even when records arrive meanwhile, and each consumer sends one such
fetch per wait, loaded or not. The poll timeout (``POLL_TIMEOUT_MS``): FastStream's batch
subscriber waits that long on the consumer's buffer, then sleeps as long again after an
empty poll. Per pair (``FETCH:POLL`` ms; one number: both alike, as before the worker told
them apart) a consumer configured as the workers' idles on a 6-partition topic of a fresh
Tansu for a few seconds while the broker's CPU and its own are read; then messages
stamped with their send time are produced one at a time, at irregular gaps, and the
consumer records produce -> consumed for each. The pairs alternate over the rounds; the
CPU is also given as a ratio to the first pair's. No target: the numbers chose the
defaults.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import machine
from bench.cpu import own_cpu_seconds, process_cpu_seconds
from bench.e2e import percentile
from billing_fleet.kafka_admin import ensure_topics
from fleet.embedded import EmbeddedKafka

TOPIC: Final = "bench.fetch-wait"
PARTITIONS: Final = 6


@dataclass(frozen=True)
class Wait:
    """A consumer's fetch wait at the broker and its poll timeout (FastStream's
    ``batch_timeout_ms``, also its sleep after an empty poll)."""

    fetch_ms: int
    poll_ms: int

    @classmethod
    def parse(cls, text: str) -> Wait:
        fetch, _, poll = text.partition(":")
        return cls(int(fetch), int(poll or fetch))

    def __str__(self) -> str:
        if self.poll_ms == self.fetch_ms:
            return f"{self.fetch_ms}"
        return f"{self.fetch_ms}:{self.poll_ms}"


@dataclass(frozen=True)
class Round:
    wait: Wait
    broker_idle: float
    """The broker's CPU while the consumer idles, in cores."""
    consumer_idle: float
    pickup_ms: list[float]


async def _poll(consumer: AIOKafkaConsumer, wait_ms: int) -> list[bytes]:
    """One poll as FastStream's batch subscriber makes it (the workers' consumers)."""
    batch = await consumer.getmany(timeout_ms=wait_ms, max_records=500)
    if not batch:
        await asyncio.sleep(wait_ms / 1000)
    return [record.value for records in batch.values() for record in records if record.value]


async def _round(
    bootstrap: str, broker_pid: int, wait: Wait, idle_s: float, messages: int
) -> Round:
    wait_ms = wait.poll_ms
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"bench-fetch-wait-{wait}-{time.monotonic_ns()}",
        fetch_max_wait_ms=wait.fetch_ms,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():
            await _poll(consumer, wait_ms)
        for _ in range(5):  # past the first fetches' positions
            await _poll(consumer, wait_ms)
        started, broker = time.monotonic(), process_cpu_seconds(broker_pid)
        own = own_cpu_seconds()
        deadline = started + idle_s
        while time.monotonic() < deadline:
            await _poll(consumer, wait_ms)
        span = time.monotonic() - started
        broker_idle = (process_cpu_seconds(broker_pid) - broker) / span
        consumer_idle = (own_cpu_seconds() - own) / span
        pickup: list[float] = []

        async def consume() -> None:
            while len(pickup) < messages:
                for value in await _poll(consumer, wait_ms):
                    pickup.append((time.perf_counter_ns() - int(value)) / 1e6)

        consuming = asyncio.create_task(consume())
        for n in range(messages):
            stamp = str(time.perf_counter_ns()).encode()
            await producer.send_and_wait(TOPIC, stamp, partition=n % PARTITIONS)
            await asyncio.sleep((5 + n * 37 % 45) / 1000)  # 5-49 ms, in no rhythm
        async with asyncio.timeout(30):
            await consuming
        return Round(wait, broker_idle, consumer_idle, pickup)
    finally:
        await producer.stop()
        await consumer.stop()


def _line(found: Round, first: Round) -> str:
    ratio = (found.broker_idle + found.consumer_idle) / (first.broker_idle + first.consumer_idle)
    p50, p99 = percentile(found.pickup_ms, 50), percentile(found.pickup_ms, 99)
    return (
        f"  {found.wait!s:>6} ms   idle: broker {found.broker_idle:6.1%} + consumer "
        f"{found.consumer_idle:6.1%} of a core (x{ratio:.2f} of {first.wait} ms)   "
        f"pickup p50 {p50:5.1f} ms, p99 {p99:5.1f} ms, max {max(found.pickup_ms):5.1f} ms"
    )


def run(*, waits: Sequence[Wait], rounds: int, idle_s: float, messages: int) -> int:
    broker = EmbeddedKafka().start()
    try:
        assert broker.pid is not None
        asyncio.run(ensure_topics(broker.bootstrap_servers, [TOPIC], PARTITIONS, 1))
        results = [
            asyncio.run(_round(broker.bootstrap_servers, broker.pid, wait, idle_s, messages))
            for _ in range(rounds)
            for wait in waits
        ]
    finally:
        broker.stop()
    print(
        f"fetch wait benchmark: {machine.described()}; one consumer of a {PARTITIONS}-partition "
        f"topic on Tansu, idle {idle_s:.0f} s, then {messages} messages at 5-49 ms gaps "
        "(produce -> consumed)"
    )
    for n in range(rounds):
        print(f"round {n + 1}:")
        chunk = results[n * len(waits) : (n + 1) * len(waits)]
        for found in chunk:
            print(_line(found, chunk[0]))
    return 0
