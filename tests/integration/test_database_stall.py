"""A stalled PostgreSQL: its processes frozen with SIGSTOP (not stopped), then SIGCONT.

A frozen server keeps its sockets open and answers nothing, so only our own deadlines end
a wait on it. These tests run their own embedded PostgreSQL (freezing the session's
would stall every other test) and always thaw it in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from billing_fleet.db import BoundedPool, bounded_transaction, create_pool
from billing_fleet.http_server import PROBE_TIMEOUT_SECONDS
from billing_fleet.migrate import migrate
from contracts import dead_letter_topic
from fleet.embedded import EmbeddedPostgres, free_port
from tests.fleet_settings import FleetSettings
from tests.gateway import serve_gateway, start_gateway
from tests.integration.test_runtime_process import start_worker
from tests.jwt_tokens import AUDIENCE, HS256_SECRET, ISSUER, claims, hs256
from tests.ledger_support import at, invoice, ledger_migrations, payment, seed
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    metric,
    prepare_tables,
    publish_events,
    toy_spec,
    unique,
    wait_for,
    worker_settings,
)
from tests.stripe_fixtures import PRIMARY_SECRET
from workers.runtime.dlt_admin import read_records
from workers.runtime.outbox import OutboxRelay, write_outbox
from workers.runtime.relay_sender import KafkaRecord
from workers.runtime.run import run_worker
from workers.runtime.spec import Outgoing

pytestmark = pytest.mark.integration

GATEWAY_BOUND = 1.0
WORKER_BOUND = 1.5
# Scheduling slack on a loaded 2-core machine; far below what a hang would take.
MARGIN = 1.5
# The client gives up long after the bound, so a hang shows as a failure, not a wait.
CLIENT_TIMEOUT = 8.0


class StallablePostgres:
    """An embedded PostgreSQL whose processes can be frozen (SIGSTOP) and thawed."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def _processes(self) -> list[psutil.Process]:
        pid = int((self.server.data_dir / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The postmaster first (it forks no new backend then), then every child."""
        stopped: list[psutil.Process] = []
        try:
            for process in self._processes():
                process.send_signal(signal.SIGSTOP)
                stopped.append(process)
            yield
        finally:
            for process in {*stopped, *self._processes()}:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
async def stallable(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StallablePostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("stall") / "pgdata", delete_on_stop=True)
    await asyncio.to_thread(server.start)
    try:
        await migrate(server.url, ledger_migrations())  # the registry's, and the ledger's
        await prepare_tables(server.url)
        yield StallablePostgres(server)
    finally:
        await asyncio.to_thread(server.stop)


async def timed(request: Any) -> tuple[httpx.Response, float]:
    """The awaited response and how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await request
    return response, loop.time() - started


# -- the helper ----------------------------------------------------------------------------


async def test_bounded_connection_abandons_a_connection_on_the_deadline(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=2)
    db = BoundedPool(pool, GATEWAY_BOUND)
    try:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        loop = asyncio.get_running_loop()
        with stallable.frozen():
            for _ in range(3):  # the pooled connection, then two connects to the postmaster
                started = loop.time()
                with pytest.raises(TimeoutError):
                    await db.fetchval("SELECT 1")
                assert loop.time() - started < GATEWAY_BOUND + MARGIN
        # Not handed back mid-query: every holder is free again and connects afresh.
        pids = await asyncio.gather(*(db.fetchval("SELECT pg_backend_pid()") for _ in range(2)))
        assert backend not in pids
    finally:
        pool.terminate()


async def test_a_statement_the_server_refuses_keeps_the_connection(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=1)
    db = BoundedPool(pool, GATEWAY_BOUND)
    try:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await db.fetchval("SELECT 1 / 0")
        with pytest.raises(asyncpg.UndefinedTableError):
            async with bounded_transaction(pool, GATEWAY_BOUND) as conn:
                await conn.execute("SELECT * FROM no_such_table")
        assert await db.fetchval("SELECT pg_backend_pid()") == backend
    finally:
        await pool.close()


async def test_a_callers_own_cancellation_stays_a_cancellation(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=1)
    db = BoundedPool(pool, 30.0)
    try:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        with stallable.frozen():
            query = asyncio.create_task(db.fetchval("SELECT 1"))
            await asyncio.sleep(0.2)
            query.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(query, MARGIN)
        assert await db.fetchval("SELECT pg_backend_pid()") != backend  # abandoned too
    finally:
        pool.terminate()


async def test_bounded_transaction_rolls_back_on_error_and_on_the_deadline(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=1)
    first, second = unique("evt"), unique("evt")
    insert = "INSERT INTO processed_events (consumer, event_id) VALUES ('stall', $1)"
    try:
        with pytest.raises(ZeroDivisionError):
            async with bounded_transaction(pool, WORKER_BOUND) as conn:
                await conn.execute(insert, first)
                _ = 1 / 0
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with bounded_transaction(pool, WORKER_BOUND) as conn:
                await conn.execute(insert, second)
                with stallable.frozen():
                    started = loop.time()
                    try:
                        await conn.execute("SELECT 1")  # the COMMIT never comes
                    finally:
                        took = loop.time() - started
        assert took < WORKER_BOUND + MARGIN
        db = BoundedPool(pool, WORKER_BOUND)
        kept = await db.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = ANY($1::text[])",
            [first, second],
        )
        assert kept == 0
    finally:
        pool.terminate()


# -- the gateway ---------------------------------------------------------------------------


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["detail"] == "database unavailable"


async def test_read_api_and_readyz_answer_503_within_the_bound_then_recover(
    kafka: Any, stallable: StallablePostgres
) -> None:
    user, customer = f"user_{secrets.token_hex(6)}", f"cus_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(stallable.url)
    try:
        await conn.execute(
            "INSERT INTO entitlement_customers (customer_id, user_id) VALUES ($1, $2)",
            customer,
            user,
        )
        await conn.execute(
            "INSERT INTO entitlements (customer_id, feature, sources) VALUES ($1, 'pro', $2)",
            customer,
            ["sub_stall"],
        )
    finally:
        await conn.close()
    settings = FleetSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=stallable.url,
        stripe_webhook_secrets=[PRIMARY_SECRET],
        gateway_port=free_port(),
        jwt_hs256_secret=HS256_SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        gateway_database_timeout_seconds=GATEWAY_BOUND,
    )
    auth = {"Authorization": f"Bearer {hs256(claims(sub=user))}"}
    base = f"http://127.0.0.1:{settings.gateway_port}"
    async with (
        serve_gateway(settings) as app,
        httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT) as client,
    ):
        assert await app.state.publisher.wait_connected(10), "gateway never reached Kafka"
        warm = await client.get("/v1/entitlements", headers=auth)  # a pooled connection
        assert [e["feature"] for e in warm.json()["entitlements"]] == ["pro"]
        assert (await client.get("/readyz")).status_code == 200

        loop = asyncio.get_running_loop()
        with stallable.frozen():
            frozen_at = loop.time()
            # At once: one query runs on the pooled connection, the others connect to the
            # frozen postmaster; each kind must end by the deadline.
            reads = await asyncio.gather(
                *(timed(client.get("/v1/entitlements", headers=auth)) for _ in range(4)),
                timed(client.get("/v1/entitlements/pro", headers=auth)),
            )
            ready, ready_took = await timed(client.get("/readyz"))
            # The abandoned connections are not reused: the next request connects again.
            again, again_took = await timed(client.get("/v1/entitlements", headers=auth))
            stalled_for = loop.time() - frozen_at

        for response, took in [*reads, (again, again_took)]:
            assert_database_unavailable(response)
            assert took < GATEWAY_BOUND + MARGIN
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unreachable"
        assert ready_took < GATEWAY_BOUND + MARGIN
        assert stalled_for > 2 * GATEWAY_BOUND  # a stall longer than the bound

        # Thawed: the same gateway answers again, no restart.
        async def recovered() -> bool:
            response = await client.get("/v1/entitlements", headers=auth)
            return response.status_code == 200

        await wait_for(recovered, timeout=10, message="the read API after SIGCONT")
        mine = await client.get("/v1/entitlements/pro", headers=auth)
        assert mine.json()["entitled"] is True
        assert (await client.get("/readyz")).status_code == 200


async def test_ledger_reads_answer_503_within_the_bound_then_recover(
    kafka: Any, stallable: StallablePostgres
) -> None:
    user, customer = f"user_{secrets.token_hex(6)}", f"cus_{secrets.token_hex(6)}"
    invoice_id = f"in_{secrets.token_hex(6)}"
    await seed(
        stallable.url,
        users={customer: user},
        invoices=[invoice(invoice_id, customer, at(0))],
        payments=[payment(f"pi_{secrets.token_hex(6)}", customer, at(1))],
    )
    settings = FleetSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=stallable.url,
        stripe_webhook_secrets=[PRIMARY_SECRET],
        gateway_port=free_port(),
        jwt_hs256_secret=HS256_SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        gateway_database_timeout_seconds=GATEWAY_BOUND,
    )
    mine = {"Authorization": f"Bearer {hs256(claims(sub=user))}"}
    service = {"Authorization": f"Bearer {hs256(claims(scope=settings.jwt_ledger_scope))}"}
    paths = [
        ("/v1/invoices", mine),
        (f"/v1/invoices/{invoice_id}", mine),
        ("/v1/payments?limit=5", mine),
        (f"/v1/customers/{customer}/invoices", service),
        ("/v1/receipts/R-1.pdf", mine),
    ]
    base = f"http://127.0.0.1:{settings.gateway_port}"
    async with (
        serve_gateway(settings),
        httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT) as client,
    ):
        warm = await client.get("/v1/invoices", headers=mine)  # a pooled connection
        assert [row["id"] for row in warm.json()["data"]] == [invoice_id]

        with stallable.frozen():
            reads = await asyncio.gather(
                *(timed(client.get(path, headers=headers)) for path, headers in paths)
            )
        for response, took in reads:
            assert_database_unavailable(response)
            assert took < GATEWAY_BOUND + MARGIN

        async def recovered() -> bool:
            response = await client.get("/v1/invoices", headers=mine)
            return response.status_code == 200

        await wait_for(recovered, timeout=10, message="the ledger read API after SIGCONT")
        answers = [await client.get(path, headers=headers) for path, headers in paths]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 404]


async def test_the_gateway_stops_in_time_while_postgresql_is_frozen(
    kafka: Any, stallable: StallablePostgres
) -> None:
    """SIGTERM's path (servers stopped, then the lifespan closes the publisher and the
    pool): closing pooled connections must not wait for a frozen server's answer."""
    settings = FleetSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=stallable.url,
        stripe_webhook_secrets=[PRIMARY_SECRET],
        gateway_port=free_port(),
        gateway_database_timeout_seconds=GATEWAY_BOUND,
    )
    app, servers, run = await start_gateway(settings)
    try:
        assert await app.state.publisher.wait_connected(10), "gateway never reached Kafka"
        base = f"http://127.0.0.1:{settings.gateway_port}"
        async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT) as client:
            # Idle pooled connections, as a serving gateway has.
            ready = await asyncio.gather(*(client.get("/readyz") for _ in range(3)))
            assert [r.status_code for r in ready] == [200] * 3
        loop = asyncio.get_running_loop()
        with stallable.frozen():
            servers.stop()
            stopping_at = loop.time()
            await asyncio.wait([run], timeout=CLIENT_TIMEOUT)
            took = loop.time() - stopping_at
        assert run.done(), "the gateway's shutdown hung on the frozen PostgreSQL"
        run.result()
        assert took < GATEWAY_BOUND + MARGIN
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


# -- the workers ---------------------------------------------------------------------------


async def test_worker_counts_dependency_retries_and_is_not_ready_then_applies_once(
    settings: FleetSettings, stallable: StallablePostgres
) -> None:
    settings = worker_settings(
        settings,
        database_url=stallable.url,
        worker_database_timeout_seconds=WORKER_BOUND,
        worker_http_port=free_port(),
    )
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    name, topic = unique("toy"), unique("runtime.stall")
    await create_topics(settings, topic)
    before, during = make_events(4), make_events(6)
    worker = asyncio.create_task(run_worker(toy_spec(name, topic), settings))
    base = f"http://127.0.0.1:{settings.worker_http_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT) as client:

            async def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get("/readyz")).status_code == 200
                return False

            await publish_events(bootstrap, topic, before)
            await wait_for(lambda: _has(stallable.url, name, 4), message="events before")
            await wait_for(ready, message="readyz before the stall")
            retries = metric("billing_retries_total", worker=name, reason="dependency")

            loop = asyncio.get_running_loop()
            with stallable.frozen():
                frozen_at = loop.time()
                await publish_events(bootstrap, topic, during)

                async def retried() -> bool:
                    count = metric("billing_retries_total", worker=name, reason="dependency")
                    return count > retries

                # The batch's transaction gives up at the bound and is retried (backoff).
                await wait_for(retried, timeout=WORKER_BOUND + 2 * MARGIN, interval=0.05)
                first_retry_after = loop.time() - frozen_at
                probe, probe_took = await timed(client.get("/readyz"))
                await asyncio.sleep(max(0.0, 3 * WORKER_BOUND - (loop.time() - frozen_at)))
                retried_during = metric("billing_retries_total", worker=name, reason="dependency")

            assert first_retry_after < WORKER_BOUND + 2 * MARGIN
            assert probe.status_code == 503
            assert probe.json()["checks"]["database"] == "unavailable"
            assert probe_took < PROBE_TIMEOUT_SECONDS + MARGIN
            assert retried_during - retries >= 2  # retried with backoff, not once and stuck

            await wait_for(lambda: _has(stallable.url, name, 10), message="events after SIGCONT")
            await wait_for(ready, message="readyz after SIGCONT")
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    rows = await applied(stallable.url, name)
    assert Counter(rows) == Counter(e.source.stripe_event_id for e in [*before, *during])
    assert await read_records(bootstrap, dead_letter_topic(topic, name)) == []


async def test_sigterm_while_postgres_is_frozen_stops_gracefully_in_time(
    settings: FleetSettings, stallable: StallablePostgres, tmp_path: Path
) -> None:
    shutdown_timeout = 8.0
    settings = settings.model_copy(update={"database_url": stallable.url})
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    name, topic = unique("toy"), unique("runtime.stall.term")
    await create_topics(settings, topic)
    before, during = make_events(3), make_events(5)
    log = tmp_path / "worker.log"
    toy = {"TOY_NAME": name, "TOY_TOPIC": topic}
    timeouts = {
        "BILLING_WORKER_DATABASE_TIMEOUT_SECONDS": str(WORKER_BOUND),
        "BILLING_WORKER_SHUTDOWN_TIMEOUT_SECONDS": str(shutdown_timeout),
        "BILLING_WORKER_DEPENDENCY_BACKOFF_MAX_SECONDS": "0.5",
    }
    process, _ = start_worker(settings, log, **toy, **timeouts)
    try:
        await publish_events(bootstrap, topic, before)
        await wait_for(lambda: _has(stallable.url, name, 3), timeout=30, message="events before")
        with stallable.frozen():
            await publish_events(bootstrap, topic, during)
            await asyncio.sleep(0.5)  # the batch is in its transaction on the frozen server
            process.send_signal(signal.SIGTERM)
            loop = asyncio.get_running_loop()
            stopping_at = loop.time()
            code = await asyncio.to_thread(process.wait, shutdown_timeout + CLIENT_TIMEOUT)
            took = loop.time() - stopping_at
    finally:
        process.kill()
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert took < shutdown_timeout, output[-3000:]
    assert "shutdown timed out" not in output, output[-3000:]

    # Nothing was lost or doubled: a new process applies the rest once.
    process, _ = start_worker(settings, log, **toy)
    try:
        await wait_for(lambda: _has(stallable.url, name, 8), timeout=30, message="the rest")
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)
    rows = await applied(stallable.url, name)
    assert Counter(rows) == Counter(e.source.stripe_event_id for e in [*before, *during])


async def test_relay_bounds_its_database_steps_but_gives_the_send_the_ack_timeout(
    stallable: StallablePostgres,
) -> None:
    pool = await create_pool(stallable.url, min_size=0, max_size=2)
    topic = unique("relay.stall")
    sent: list[KafkaRecord] = []

    async def slow_broker(records: Sequence[KafkaRecord]) -> None:
        await asyncio.sleep(WORKER_BOUND + 0.5)  # longer than a database step may take
        sent.extend(records)

    def outgoing(count: int) -> list[Outgoing]:
        return [Outgoing(topic, "cus_1", b"v", {"ce_id": unique("ce")}) for _ in range(count)]

    relay = OutboxRelay(
        pool, slow_broker, worker="relay", ack_timeout=3 * WORKER_BOUND, db_timeout=WORKER_BOUND
    )
    db = BoundedPool(pool, WORKER_BOUND)
    try:
        async with bounded_transaction(pool, WORKER_BOUND) as conn:
            await write_outbox(conn, "relay", outgoing(3))
        assert await relay.flush() == 3

        async with bounded_transaction(pool, WORKER_BOUND) as conn:
            await write_outbox(conn, "relay", outgoing(2))
        loop = asyncio.get_running_loop()
        with stallable.frozen():
            started = loop.time()
            with pytest.raises(TimeoutError):
                await relay.flush()
            assert loop.time() - started < WORKER_BOUND + MARGIN
        assert await db.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topic) == 2
        assert await relay.flush() == 2
        assert len(sent) == 5
    finally:
        pool.terminate()


async def _has(url: str, name: str, count: int) -> bool:
    return len(await applied(url, name)) >= count
