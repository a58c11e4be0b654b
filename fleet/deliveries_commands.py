"""``billing-fleet deliveries list|retry``: the workers' deliveries, for operators.

PostgreSQL is checked first: not there is one line on stderr and exit status 1, as is one
lost while the command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from fleet.preflight import DATABASE_ERRORS, failure_reason, with_connection
from fleet.settings import DevSettings

Command = Callable[[argparse.Namespace, DevSettings], int]
NOT_MIGRATED = "the database has no deliveries table: run `billing-fleet migrate`"


def add_deliveries_parser(commands: Any, dispatch: Command) -> None:
    deliveries = commands.add_parser(
        "deliveries", help="list the workers' deliveries (mails, webhooks); re-queue one"
    )
    deliveries.set_defaults(handler=dispatch)
    sub = deliveries.add_subparsers(dest="deliveries_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the newest deliveries: id, status, attempts, error")
    listing.add_argument("--worker", help="only this worker's")
    listing.add_argument(
        "--status", type=_status, help="only those with this status: pending, sent, failed, dead"
    )
    listing.add_argument("--limit", type=_positive, default=100, help="default: %(default)s")
    listing.set_defaults(deliveries_handler=_list)
    retry = sub.add_parser("retry", help="re-queue a dead or failed delivery (due now)")
    retry.add_argument("id", type=_positive, metavar="ID", help="as `deliveries list` prints it")
    retry.set_defaults(deliveries_handler=_retry)


def run_deliveries(args: argparse.Namespace, settings: DevSettings) -> int:
    if not settings.database_url:
        print(
            "billing-fleet deliveries: set DATABASE_URL (or BILLING_DATABASE_URL), "
            "or run it next to `billing-fleet dev`",
            file=sys.stderr,
        )
        return 2
    command: Command = args.deliveries_handler
    return command(args, settings)


def _status(text: str) -> str:
    # The model's statuses, imported only when asked: the gateway's CLI loads no worker code.
    from workers.runtime.deliveries.model import STATUSES

    if text not in STATUSES:
        raise argparse.ArgumentTypeError(f"not a status: {text!r} (one of {', '.join(STATUSES)})")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _failed(action: str, exc: BaseException) -> int:
    reason = failure_reason(exc, missing_table=NOT_MIGRATED)
    print(f"billing-fleet deliveries {action}: {reason}", file=sys.stderr)
    return 1


def _list(args: argparse.Namespace, settings: DevSettings) -> int:
    from billing_fleet.masking import mask_addresses, mask_destination
    from workers.runtime.deliveries.store import list_deliveries

    assert settings.database_url
    try:
        rows = with_connection(
            settings.database_url,
            lambda conn: list_deliveries(
                conn, worker=args.worker, status=args.status, limit=args.limit
            ),
        )
    except DATABASE_ERRORS as exc:
        return _failed("list", exc)
    if not rows:
        print("no deliveries")
        return 0
    print("id\tworker\tchannel\tstatus\tattempts\tnext attempt\tdestination\tlast result")
    for row in rows:
        # Mail destinations and the replies naming them, masked: this goes to terminals.
        last = " ".join(part for part in (row.last_code, row.last_detail) if part) or "-"
        last, destination = mask_addresses(last), mask_destination(row.destination)
        due = row.next_attempt_at.isoformat(timespec="seconds") if row.status == "pending" else "-"
        print(
            f"{row.id}\t{row.worker}\t{row.channel}\t{row.status}\t{row.attempts}\t{due}"
            f"\t{destination[:120]}\t{last[:200]}"
        )
    return 0


def _retry(args: argparse.Namespace, settings: DevSettings) -> int:
    from workers.runtime.deliveries.store import NotRetryable, requeue

    assert settings.database_url
    try:
        worker = with_connection(settings.database_url, lambda conn: requeue(conn, args.id))
    except NotRetryable as exc:
        print(f"billing-fleet deliveries retry: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return _failed("retry", exc)
    print(f"delivery {args.id} of worker {worker} re-queued: pending, due now")
    return 0
