"""``billing-fleet worker`` as a process: SIGKILL mid-batch, SIGTERM mid-batch, probes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from fleet.embedded import free_port
from tests.fleet_settings import FleetSettings
from tests.integration.test_cli import COMMAND, clean_env
from tests.integration.test_runtime_outage import committed
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    prepare_tables,
    publish_events,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def start_worker(
    settings: FleetSettings, log: Path, **toy: str
) -> tuple[subprocess.Popen[bytes], int]:
    assert settings.kafka_bootstrap_servers and settings.database_url
    port = free_port()
    # ``toy`` may override the defaults (another declaration).
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "BILLING_WORKER_DECLARATION": "tests.toy_worker:DECLARATION",
        "BILLING_WORKER_SESSION_TIMEOUT_MS": "1000",
        "BILLING_WORKER_HTTP_PORT": str(port),
        "BILLING_KAFKA_TOPIC_PARTITIONS": "2",
        "PYTHONPATH": str(ROOT),
    }
    env = clean_env(**{**values, **toy})
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*COMMAND, "worker", toy["TOY_NAME"]], env=env, stdout=out, stderr=out, cwd=ROOT
        )
    return process, port


async def in_transaction(url: str) -> bool:
    """True while a toy insert runs in an open (uncommitted) transaction."""
    conn = await asyncpg.connect(url)
    try:
        busy = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'INSERT INTO toy_applied%'"
            " AND state IN ('active', 'idle in transaction')"
        )
    finally:
        await conn.close()
    return bool(busy)


async def test_sigkill_mid_batch_then_restart_applies_everything_once(
    settings: FleetSettings, kafka_messages: Any, tmp_path: Path
) -> None:
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, url = settings.kafka_bootstrap_servers, settings.database_url
    name, topic, out = unique("toy"), unique("runtime.crash"), unique("runtime.crash.out")
    await prepare_tables(url)
    await create_topics(settings, topic, out)
    events = make_events(60)
    await publish_events(bootstrap, topic, events)
    toy = {"TOY_NAME": name, "TOY_TOPIC": topic, "TOY_OUT_TOPIC": out}
    log = tmp_path / "worker.log"

    process, _ = start_worker(
        settings,
        log,
        BILLING_WORKER_BATCH_MAX_RECORDS="20",
        TOY_SLEEP_SECONDS="0.02",
        **toy,
    )
    try:
        await wait_for(lambda: _has(url, name, 20), timeout=30, message="a first batch")
        await wait_for(lambda: in_transaction(url), timeout=10, message="a batch in flight")
        process.kill()
        assert process.wait(10) == -signal.SIGKILL
    finally:
        process.kill()
    applied_before = set(await applied(url, name))
    assert 20 <= len(applied_before) < 60, log.read_text()[-3000:]

    process, _ = start_worker(settings, log, **toy)
    try:
        await wait_for(lambda: _has(url, name, 60), timeout=30, message=log.read_text()[-3000:])
        records = await kafka_messages(out, expect=60, timeout=20)
    finally:
        process.terminate()
        process.wait(20)

    rows = await applied(url, name)
    assert Counter(rows) == Counter(e.source.stripe_event_id for e in events)
    published = Counter(dict(r.headers)["ce_id"].decode() for r in records)
    assert set(published) == {f"toy-{e.source.stripe_event_id}" for e in events}
    # At least once: only rows the killed relay may have sent without marking them (the
    # at-least-once edge) can appear twice; rows written after the restart appear once.
    twice = {ce_id for ce_id, count in published.items() if count > 1}
    assert twice <= {f"toy-{event_id}" for event_id in applied_before}
    assert max(published.values()) <= 2


async def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    settings: FleetSettings, tmp_path: Path
) -> None:
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, url = settings.kafka_bootstrap_servers, settings.database_url
    name, topic = unique("toy"), unique("runtime.term")
    await prepare_tables(url)
    await create_topics(settings, topic)
    events = make_events(30)
    log = tmp_path / "worker.log"
    process, port = start_worker(
        settings, log, TOY_NAME=name, TOY_TOPIC=topic, TOY_SLEEP_SECONDS="0.05"
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_for(lambda: _ready(base), timeout=30, message="readyz 200")
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200
            spec = (await client.get("/asyncapi.json")).json()
            assert set(spec["channels"]) == {f"{topic}:{name}", f"{topic}.{name}.dlt"}
        await publish_events(bootstrap, topic, events)
        await wait_for(lambda: in_transaction(url), timeout=20, message="a batch in flight")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
    finally:
        process.kill()
    assert code == 0, log.read_text()[-3000:]
    done = len(await applied(url, name))
    assert done > 0
    assert await committed(bootstrap, name, topic) == done


async def _has(url: str, name: str, count: int) -> bool:
    return len(await applied(url, name)) >= count


async def _ready(base: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            response = await client.get("/readyz")
            metrics = await client.get("/metrics")
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and b"billing_" in metrics.content
