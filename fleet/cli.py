"""The ``billing-fleet`` command: one image, the subcommand picks the role.

The usual mistakes end in one line on stderr and a non-zero exit status, never a
traceback: invalid settings (one line per field, exit 2), a dependency that is not there
(PostgreSQL, a gateway, a port in use: exit 1), a worker that does not build (exit 1).

Each command reads only the settings of what it runs (``_settings_class``): the gateway
refuses an invalid gateway variable and ignores the workers', and the reverse.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from billing_fleet.gc_tuning import BATCH_YOUNG_THRESHOLD, freeze_startup
from billing_fleet.logs import configure_logging, one_line
from billing_fleet.settings import CoreSettings, variable_of
from fleet.dev_state import fill_from_dev
from fleet.preflight import Unavailable, check_database, require_gateway_ports
from fleet.send_test_event import DEFAULT_CUSTOMER_ID, DEFAULT_USER_ID, webhook_url
from fleet.settings import DevSettings

if TYPE_CHECKING:  # imported where a command runs: `worker` loads nothing of the gateway
    from api_gateway.settings import GatewaySettings
    from fleet.command_settings import DevFleetSettings, SendTestEventSettings
    from workers.runtime.settings import RuntimeSettings

Command = Callable[[argparse.Namespace, Any], int]
"""A command's handler: its arguments and an instance of its ``_settings_class``."""


def _dev(args: argparse.Namespace, settings: DevFleetSettings) -> int:
    from fleet.dev import run_dev

    return run_dev(settings)


def _gateway(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from api_gateway.app import serve
    from billing_fleet.signals import ShutdownSignals

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
    try:
        require_gateway_ports(settings)
    except Unavailable as exc:
        print(f"billing-fleet gateway: {exc}", file=sys.stderr)
        return 1
    freeze_startup()  # full collections skip the imported modules (tail latency)
    with ShutdownSignals() as signals:
        signals.run(serve(settings))
    return 0


def _migrate(args: argparse.Namespace, settings: DevSettings) -> int:
    from asyncpg import PostgresError

    from billing_fleet.migrate import MigrationError, migrate
    from workers.registry import with_override
    from workers.runtime.declaration import WorkerBuildError

    url = settings.database_url
    if not url:
        print(
            "billing-fleet migrate: set DATABASE_URL (or BILLING_DATABASE_URL), "
            "or run it next to `billing-fleet dev`",
            file=sys.stderr,
        )
        return 2

    async def run() -> list[str]:
        await check_database(url)  # one clear line when PostgreSQL is not there
        return await migrate(url, with_override(), settings.migrate_lock_timeout_seconds)

    try:
        applied = asyncio.run(run())
    except (Unavailable, MigrationError, WorkerBuildError, PostgresError, OSError) as exc:
        print(f"billing-fleet migrate: {one_line(exc)}", file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("nothing to apply: the schema is up to date")
    return 0


def _worker(args: argparse.Namespace, settings: RuntimeSettings) -> int:
    from billing_fleet.migrate import SchemaBehind
    from billing_fleet.signals import ShutdownSignals
    from workers.runtime.declaration import WorkerBuildError
    from workers.runtime.run import run_worker

    if not settings.database_url or not settings.kafka_bootstrap_servers:
        print("billing-fleet worker: set DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    declaration = args.declaration
    try:
        spec = declaration.build(settings)
    except WorkerBuildError as exc:
        print(f"billing-fleet worker: {exc}", file=sys.stderr)
        return 1
    freeze_startup(BATCH_YOUNG_THRESHOLD)
    try:
        with ShutdownSignals() as signals:
            signals.run(run_worker(spec, settings, migrations=declaration.migration_packages))
    except SchemaBehind as exc:
        print(f"billing-fleet worker: {exc}", file=sys.stderr)
        return 1
    return 0


def _dlt(args: argparse.Namespace, settings: DevSettings) -> int:
    if not settings.kafka_bootstrap_servers:
        print(
            "billing-fleet dlt: set KAFKA_BOOTSTRAP_SERVERS, or run it next to `billing-fleet dev`",
            file=sys.stderr,
        )
        return 2
    command: Command = args.dlt_handler
    return command(args, settings)


def _send_test_event(args: argparse.Namespace, settings: SendTestEventSettings) -> int:
    import httpx

    from fleet.send_test_event import send

    secret = args.secret or next(
        (s.get_secret_value() for s in settings.stripe_webhook_secrets), None
    )
    if not secret:
        print(
            "billing-fleet send-test-event: pass --secret, set BILLING_STRIPE_WEBHOOK_SECRETS, "
            "or run it next to `billing-fleet dev`",
            file=sys.stderr,
        )
        return 2
    url = args.url or webhook_url(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # we print the outcome ourselves
    try:
        sent = send(url, secret, customer_id=args.customer, user_id=args.user)
    except httpx.TransportError as exc:
        print(
            f"billing-fleet send-test-event: no gateway answers at {url} "
            f"({type(exc).__name__}: {exc or 'no answer'}); "
            "start `billing-fleet dev` or pass --url",
            file=sys.stderr,
        )
        return 1
    for result in sent:
        print(f"{result.stripe_type:<30} {result.status} {result.body}")
    print(f"customer {args.customer}  user {args.user}")
    return 0 if all(result.ok for result in sent) else 1


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

    from fleet.dlt_commands import add_dlt_parser

    add_dlt_parser(commands, _dlt)

    from fleet.deliveries_commands import add_deliveries_parser, run_deliveries

    add_deliveries_parser(commands, run_deliveries)

    from fleet.webhooks_commands import add_webhooks_parser, run_webhooks

    add_webhooks_parser(commands, run_webhooks)

    send = commands.add_parser(
        "send-test-event",
        help="POST a signed customer.created (with a user) and customer.subscription.created",
    )
    send.add_argument(
        "--url",
        help="webhook endpoint (default: the gateway of BILLING_GATEWAY_HOST/PORT, or dev's)",
    )
    send.add_argument(
        "--secret",
        help="signing secret (default: first of BILLING_STRIPE_WEBHOOK_SECRETS, or dev's)",
    )
    send.add_argument("--customer", default=DEFAULT_CUSTOMER_ID, help="default: %(default)s")
    send.add_argument("--user", default=DEFAULT_USER_ID, help="default: %(default)s")
    send.set_defaults(handler=_send_test_event)
    # Commands an operator runs in a second terminal next to `dev`: they use its servers.
    for command in (
        migrate,
        send,
        commands.choices["dlt"],
        commands.choices["deliveries"],
        commands.choices["webhooks"],
    ):
        command.set_defaults(next_to_dev=True)
    return parser


def settings_errors(exc: ValidationError, cls: type[CoreSettings] = CoreSettings) -> list[str]:
    """One line per invalid setting of ``cls``, named as it is set (its variable), never
    its value."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"billing-fleet: {variable_of(cls, field)}: {message}")
    return lines


class CommandRefused(Exception):
    """Nothing to run (an unknown worker: status 2; an override naming no declaration: 1)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _settings_class(args: argparse.Namespace) -> type[CoreSettings]:
    """The settings of what ``args.command`` runs, and nothing more."""
    if args.command == "gateway":
        from api_gateway.settings import GatewaySettings

        return GatewaySettings
    if args.command == "worker":
        from workers.registry import WORKERS, declaration_of
        from workers.runtime.declaration import WorkerBuildError, WorkerDeclaration

        try:
            declaration: WorkerDeclaration = declaration_of(args.name)
        except KeyError:
            known = ", ".join(WORKERS)
            raise CommandRefused(f"unknown worker {args.name!r} (known: {known})", 2) from None
        except WorkerBuildError as exc:
            raise CommandRefused(str(exc), 1) from None
        args.declaration = declaration
        return declaration.settings_class()
    if args.command == "dev":
        from fleet.command_settings import dev_settings_class

        return dev_settings_class()
    if args.command == "send-test-event":
        from fleet.command_settings import SendTestEventSettings

        return SendTestEventSettings
    if args.command == "webhooks":
        from fleet.webhooks_commands import webhooks_settings_class

        return webhooks_settings_class()
    return DevSettings  # migrate, dlt, deliveries: the servers, or a running dev's


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cls = _settings_class(args)
    except CommandRefused as exc:
        print(f"billing-fleet {args.command}: {exc}", file=sys.stderr)
        return exc.status
    try:
        settings = cls()
    except ValidationError as exc:
        print("\n".join(settings_errors(exc, cls)), file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if getattr(args, "next_to_dev", False) and isinstance(settings, DevSettings):
        settings = fill_from_dev(settings)  # what a running `dev` serves, for unset variables
    handler: Command = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
