"""The workers ``dev`` hosts: a rebuild that fails keeps the running worker, one that
works replaces it, and a worker that stops with an error ends them all (dev then stops)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts import BillingEvent
from fleet.dev_workers import DevWorkers, WorkerFailed
from tests.cli_support import EXAMPLE_CATALOG
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    create_topics,
    make_events,
    publish_events,
    unique,
    wait_for,
    worker_settings,
)
from workers.entitlement.worker import NAME, build
from workers.runtime.spec import Outgoing, WorkerSpec

pytestmark = pytest.mark.integration


def on_topic(topic: str) -> Any:
    """The entitlement factory, consuming ``topic`` (not the session's shared input)."""

    def factory(settings: FleetSettings) -> WorkerSpec:
        return build(settings).consuming(topic)

    return factory


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


async def test_a_failed_rebuild_keeps_the_worker_and_a_good_one_replaces_it(
    settings: FleetSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(EXAMPLE_CATALOG.read_text())
    topic = unique("dev.workers")
    configured = worker_settings(settings, entitlement_catalog_path=catalog)
    await create_topics(configured, topic)
    workers = DevWorkers(configured, {NAME: on_topic(topic)})
    first = workers.specs[NAME]
    assert first.watch_files == (catalog,)
    running = asyncio.create_task(workers.run(configured))

    async def logged(message: str) -> bool:
        return message in messages(caplog)

    try:
        await wait_for(lambda: logged("worker started"), timeout=30, message="never started")
        catalog.write_text("products: [\n")
        await wait_for(
            lambda: logged(
                "worker not reloaded: its new build failed, the running one keeps running"
            ),
            timeout=20,
            message="the broken catalog went unnoticed",
        )
        [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "not valid YAML" in error.__dict__["error"]
        assert "worker stopping" not in messages(caplog)
        assert workers.specs[NAME] is first and not running.done()

        catalog.write_text(EXAMPLE_CATALOG.read_text())
        await wait_for(
            lambda: logged("worker reloaded: the new build starts"), timeout=20, message="no reload"
        )
        assert workers.specs[NAME] is not first
        assert messages(caplog).count("worker stopped") == 1  # the old one, gracefully
        await wait_for(
            lambda: _count(caplog, "worker started", 2), timeout=30, message="no restart"
        )
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert workers.failure is None


async def _count(caplog: pytest.LogCaptureFixture, message: str, count: int) -> bool:
    return messages(caplog).count(message) >= count


async def test_a_worker_that_stops_with_an_error_ends_the_workers(
    settings: FleetSettings, create_database: Any
) -> None:
    """A database behind the release: the worker refuses to run (SchemaBehind)."""
    configured = worker_settings(settings, database_url=await create_database())
    workers = DevWorkers(configured, {NAME: on_topic(unique("dev.workers"))})

    with pytest.raises(WorkerFailed, match=r"worker entitlement stopped: .*billing-fleet migrate"):
        async with asyncio.timeout(30):
            await workers.run(configured)

    assert workers.failure is not None


async def test_a_stop_while_the_old_worker_drains_for_a_reload_starts_no_new_one(
    settings: FleetSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """dev stopped (Ctrl-C) while a reload waits for the old worker's batch: the stop
    waits for that batch, then ends; the rebuilt worker never starts."""
    caplog.set_level(logging.INFO)
    watched = tmp_path / "catalog.yaml"
    watched.write_text("v1")
    topic, name = unique("dev.reload-stop"), unique("reload-stop")
    configured = worker_settings(settings)
    await create_topics(configured, topic)
    in_batch, release = asyncio.Event(), asyncio.Event()

    async def handle(conn: asyncpg.Connection, event: BillingEvent) -> list[Outgoing]:
        in_batch.set()
        await release.wait()  # the batch the old worker finishes before it stops
        return []

    def factory(settings: FleetSettings) -> WorkerSpec:
        return WorkerSpec.single(name, handle, topic=topic, watch_files=(watched,))

    workers = DevWorkers(configured, {name: factory})
    running = asyncio.create_task(workers.run(configured))
    try:
        await wait_for(
            lambda: _count(caplog, "worker started", 1), timeout=30, message="never started"
        )
        assert configured.kafka_bootstrap_servers
        await publish_events(configured.kafka_bootstrap_servers, topic, make_events(1))
        async with asyncio.timeout(30):
            await in_batch.wait()
        watched.write_text("v2")  # a reload: the old worker stops, its batch still running
        await wait_for(
            lambda: _count(caplog, "worker stopping", 1), timeout=20, message="no reload"
        )

        running.cancel()  # dev stops now
        await asyncio.sleep(0.5)
        assert not running.done()  # the old worker's batch is still being waited for
        release.set()
        await asyncio.wait({running}, timeout=15)  # not awaited: a lost stop hangs it
        assert running.done(), "the stop was lost: dev would hang"
        assert running.cancelled()
    finally:
        release.set()
        running.cancel()
        await asyncio.wait({running}, timeout=30)
    assert messages(caplog).count("worker stopped") == 1
    assert messages(caplog).count("worker started") == 1  # the rebuilt one never started
    assert "worker reloaded: the new build starts" not in messages(caplog)
