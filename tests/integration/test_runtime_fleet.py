"""Two workers at once, as two ``billing-fleet worker`` processes on one database and one
input topic: the real entitlement worker and a toy that emits to its own topic. Each
applies every event once in its own group and relays only its own outbox rows; one
killed, the other goes on, and the killed one's backlog is relayed after its restart."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from billing_fleet.db import bounded_transaction, create_pool
from contracts import ENTITLEMENT_CHANGES
from tests.cli_support import stop_all, wait_worker_ready
from tests.fleet_settings import FleetSettings
from tests.integration.test_entitlement_worker import (
    SYNCENGINE_CREATED,
    new_customer,
    subscription_fixture,
    write_catalog,
)
from tests.integration.test_runtime_process import start_worker
from tests.runtime_toy import (
    applied,
    create_topics,
    prepare_tables,
    publish_events,
    unique,
    wait_for,
)
from workers.runtime.dlt_admin import DeadLetter, read_records
from workers.runtime.outbox import write_outbox
from workers.runtime.spec import Outgoing

pytestmark = pytest.mark.integration


async def published_metric(port: int) -> dict[str, float]:
    """``billing_outbox_published_total`` of the worker process on ``port``, by worker."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "billing_outbox_published"
        for sample in family.samples
        if sample.name == "billing_outbox_published_total"
    }


async def ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def outbox_rows(url: str, worker: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE worker = $1", worker)
    finally:
        await conn.close()
    return count


async def changes_of(bootstrap: str, customers: set[str]) -> list[DeadLetter]:
    keys = {c.encode() for c in customers}
    return [r for r in await read_records(bootstrap, ENTITLEMENT_CHANGES) if r.key in keys]


async def test_two_worker_processes_each_apply_once_and_relay_only_their_own_rows(
    settings: FleetSettings, create_database: Any, tmp_path: Path
) -> None:
    url = await create_database(migrated=True)  # an outbox no other test writes to
    settings = settings.model_copy(update={"database_url": url})
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    toy, topic, toy_out = unique("toy"), unique("fleet.in"), unique("fleet.toy.out")
    entitlement_name = unique("entitlement")  # a consumer group of its own
    await prepare_tables(url)
    await create_topics(settings, topic, toy_out)
    catalog = write_catalog(tmp_path / "catalog.yaml")
    log = tmp_path / "workers.log"
    entitlement_env = {
        "TOY_NAME": entitlement_name,
        "TOY_TOPIC": topic,
        "BILLING_WORKER_DECLARATION": "tests.toy_worker:ENTITLEMENT_ON_TOPIC",
        "BILLING_ENTITLEMENT_CATALOG_PATH": str(catalog),
    }
    toy_env = {"TOY_NAME": toy, "TOY_TOPIC": topic, "TOY_OUT_TOPIC": toy_out}
    first = [new_customer() for _ in range(5)]
    second = [new_customer() for _ in range(5)]
    first_events = [subscription_fixture(SYNCENGINE_CREATED, c) for c in first]
    second_events = [subscription_fixture(SYNCENGINE_CREATED, c) for c in second]
    all_ids = [e.source.stripe_event_id for e in [*first_events, *second_events]]

    entitlement, entitlement_port = start_worker(settings, log, **entitlement_env)
    toy_process, toy_port = start_worker(settings, log, **toy_env)
    processes = [entitlement, toy_process]
    try:
        await wait_worker_ready(entitlement, entitlement_port, log)
        await wait_worker_ready(toy_process, toy_port, log)
        await publish_events(bootstrap, topic, first_events)
        await wait_for(lambda: _count(changes_of(bootstrap, set(first)), 10), timeout=30)
        await wait_for(lambda: _count(read_records(bootstrap, toy_out), 5), timeout=30)
        await wait_for(lambda: _zero(outbox_rows(url, toy)), message="the toy's rows relayed")

        toy_process.kill()
        assert toy_process.wait(10) == -signal.SIGKILL
        # The backlog a killed worker leaves: its rows, written but not yet relayed.
        backlog = [
            Outgoing(toy_out, "cus_backlog", f"b{i}".encode(), {"ce_id": f"backlog-{i}"})
            for i in range(3)
        ]
        pool = await create_pool(url)
        try:
            async with bounded_transaction(pool, 5) as tx:
                await write_outbox(tx, toy, backlog)
        finally:
            await pool.close()

        # The entitlement worker goes on alone, and leaves the toy's rows alone.
        await publish_events(bootstrap, topic, second_events)
        await wait_for(lambda: _count(changes_of(bootstrap, set(second)), 10), timeout=30)
        assert await outbox_rows(url, toy) == len(backlog)
        assert len(await read_records(bootstrap, toy_out)) == 5
        assert await published_metric(entitlement_port) == {entitlement_name: 20}

        toy_process, toy_port = start_worker(settings, log, **toy_env)
        processes.append(toy_process)
        await wait_for(lambda: _count(read_records(bootstrap, toy_out), 13), timeout=30)
        await wait_for(lambda: _zero(outbox_rows(url, toy)), message="the backlog relayed")
        # The restarted toy relayed the backlog and the second batch's rows, nothing else.
        assert await published_metric(toy_port) == {toy: 8}
        assert await published_metric(entitlement_port) == {entitlement_name: 20}
    finally:
        stop_all(processes)

    assert Counter(await applied(url, toy)) == Counter(all_ids)
    conn = await asyncpg.connect(url)
    try:
        by_consumer = await conn.fetch(
            "SELECT consumer, count(*) AS n FROM processed_events GROUP BY consumer"
        )
    finally:
        await conn.close()
    assert {row["consumer"]: row["n"] for row in by_consumer} == {entitlement_name: 10, toy: 10}
    changes = await changes_of(bootstrap, {*first, *second})
    assert Counter(r.key for r in changes) == Counter(c.encode() for c in [*first, *second] * 2)
    toy_records = await read_records(bootstrap, toy_out)
    assert sorted(r.header("ce_id") or "" for r in toy_records) == sorted(
        [*(f"toy-{i}" for i in all_ids), *(f"backlog-{i}" for i in range(3))]
    )
    assert await read_records(bootstrap, ENTITLEMENT_CHANGES) != []


async def _count(records: Any, count: int) -> bool:
    return len(await records) >= count


async def _zero(rows: Any) -> bool:
    return bool(await rows == 0)
