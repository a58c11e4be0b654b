"""The ``billing-fleet`` command: one image, the subcommand picks the role."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from billing_fleet.gc_tuning import BATCH_YOUNG_THRESHOLD, freeze_startup
from billing_fleet.logs import configure_logging
from billing_fleet.send_test_event import DEFAULT_URL
from billing_fleet.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from billing_fleet.dev import run_dev

    return run_dev(settings)


def _gateway(args: argparse.Namespace, settings: Settings) -> int:
    from api_gateway.app import serve
    from billing_fleet.dev import ShutdownSignals

    missing = [
        name
        for name, value in (
            ("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
            ("BILLING_STRIPE_WEBHOOK_SECRETS", settings.stripe_webhook_secrets),
        )
        if not value
    ]
    if missing:
        print(f"billing-fleet gateway: set {' and '.join(missing)}", file=sys.stderr)
        return 2
    freeze_startup()  # full collections skip the imported modules (tail latency)
    with ShutdownSignals() as signals:
        signals.run(serve(settings))
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from asyncpg import PostgresError

    from billing_fleet.migrate import MigrationError, migrate

    if not settings.database_url:
        print("billing-fleet migrate: set DATABASE_URL (or BILLING_DATABASE_URL)", file=sys.stderr)
        return 2
    try:
        applied = asyncio.run(migrate(settings.database_url))
    except (MigrationError, PostgresError, OSError) as exc:
        print(f"billing-fleet migrate: {exc}", file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("nothing to apply: the schema is up to date")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from billing_fleet.dev import ShutdownSignals
    from billing_fleet.migrate import SchemaBehind
    from workers.registry import WORKERS, build_worker
    from workers.runtime.run import run_worker

    if not settings.database_url or not settings.kafka_bootstrap_servers:
        print("billing-fleet worker: set DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    try:
        spec = build_worker(args.name, settings)
    except KeyError:
        print(
            f"billing-fleet worker: unknown worker {args.name!r} (known: {', '.join(WORKERS)})",
            file=sys.stderr,
        )
        return 2
    freeze_startup(BATCH_YOUNG_THRESHOLD)
    try:
        with ShutdownSignals() as signals:
            signals.run(run_worker(spec, settings))
    except SchemaBehind as exc:
        print(f"billing-fleet worker: {exc}", file=sys.stderr)
        return 1
    return 0


def _dlt(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.kafka_bootstrap_servers:
        print("billing-fleet dlt: set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    command: Command = args.dlt_handler
    return command(args, settings)


def _send_test_event(args: argparse.Namespace, settings: Settings) -> int:
    from billing_fleet.send_test_event import send

    secret = args.secret or next(
        (s.get_secret_value() for s in settings.stripe_webhook_secrets), None
    )
    if not secret:
        print(
            "billing-fleet send-test-event: pass --secret or set BILLING_STRIPE_WEBHOOK_SECRETS",
            file=sys.stderr,
        )
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # we print the outcome ourselves
    status, body = send(args.url, secret)
    print(status)
    print(body)
    return 0 if 200 <= status < 300 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="billing-fleet",
        description="Stripe billing events to entitlements, invoices, notifications and Kafka.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev", help="gateway on embedded Kafka and PostgreSQL (or the configured ones)"
    )
    dev.set_defaults(handler=_dev)

    gateway = commands.add_parser("gateway", help="run the HTTP gateway (webhooks, read API)")
    gateway.set_defaults(handler=_gateway)

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(handler=_migrate)

    worker = commands.add_parser("worker", help="run one worker (consumer group NAME)")
    worker.add_argument("name", metavar="NAME", help="the worker, e.g. entitlement")
    worker.set_defaults(handler=_worker)

    from billing_fleet.dlt_commands import add_dlt_parser

    add_dlt_parser(commands, _dlt)

    send = commands.add_parser(
        "send-test-event", help="POST a signed customer.subscription.created to a gateway"
    )
    send.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="webhook endpoint (default: %(default)s)",
    )
    send.add_argument(
        "--secret",
        help="signing secret (default: first of BILLING_STRIPE_WEBHOOK_SECRETS)",
    )
    send.set_defaults(handler=_send_test_event)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    handler: Command = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
