"""The ``billing-fleet`` command: one image, the subcommand picks the role.

The usual mistakes end in one line on stderr and a non-zero exit status, never a
traceback: invalid settings (one line per field, exit 2), a dependency that is not there
(PostgreSQL, a gateway, a port in use: exit 1), a worker that does not build (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from pydantic import AliasChoices, ValidationError

from billing_fleet.dev_state import fill_from_dev
from billing_fleet.gc_tuning import BATCH_YOUNG_THRESHOLD, freeze_startup
from billing_fleet.logs import configure_logging, one_line
from billing_fleet.preflight import Unavailable, check_database, require_gateway_ports
from billing_fleet.send_test_event import DEFAULT_CUSTOMER_ID, DEFAULT_USER_ID, webhook_url
from billing_fleet.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from billing_fleet.dev import run_dev

    return run_dev(settings)


def _gateway(args: argparse.Namespace, settings: Settings) -> int:
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


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from asyncpg import PostgresError

    from billing_fleet.migrate import MigrationError, migrate

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
        return await migrate(url)

    try:
        applied = asyncio.run(run())
    except (Unavailable, MigrationError, PostgresError, OSError) as exc:
        print(f"billing-fleet migrate: {one_line(exc)}", file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("nothing to apply: the schema is up to date")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from billing_fleet.migrate import SchemaBehind
    from billing_fleet.signals import ShutdownSignals
    from workers.registry import WORKERS, WorkerBuildError, build_worker
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
    except WorkerBuildError as exc:
        print(f"billing-fleet worker: {exc}", file=sys.stderr)
        return 1
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
        print(
            "billing-fleet dlt: set KAFKA_BOOTSTRAP_SERVERS, or run it next to `billing-fleet dev`",
            file=sys.stderr,
        )
        return 2
    command: Command = args.dlt_handler
    return command(args, settings)


def _send_test_event(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from billing_fleet.send_test_event import send

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

    from billing_fleet.dlt_commands import add_dlt_parser

    add_dlt_parser(commands, _dlt)

    from billing_fleet.deliveries_commands import add_deliveries_parser, run_deliveries

    add_deliveries_parser(commands, run_deliveries)

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
    for command in (migrate, send, commands.choices["dlt"], commands.choices["deliveries"]):
        command.set_defaults(next_to_dev=True)
    return parser


def settings_errors(exc: ValidationError) -> list[str]:
    """One line per invalid setting, named as it is set (its variable), never its value."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"billing-fleet: {_variable(field)}: {message}")
    return lines


def _variable(loc: str) -> str:
    """The variable(s) of the setting an error's ``loc`` names (its field or an alias)."""
    for name, info in Settings.model_fields.items():
        aliases = info.validation_alias
        names = [str(c) for c in aliases.choices] if isinstance(aliases, AliasChoices) else []
        if loc == name or loc in names:
            # The unprefixed one first: DATABASE_URL or BILLING_DATABASE_URL.
            return " or ".join(reversed(names)) if names else f"BILLING_{name.upper()}"
    return loc or "configuration"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print("\n".join(settings_errors(exc)), file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if getattr(args, "next_to_dev", False):
        settings = fill_from_dev(settings)  # what a running `dev` serves, for unset variables
    handler: Command = args.handler
    return handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
