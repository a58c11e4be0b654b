"""``billing-fleet webhooks list|enable``: the outbound webhook endpoints, for operators.

``list`` reads the endpoints file (``BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH``) and
PostgreSQL; ``enable`` only PostgreSQL. PostgreSQL is checked first: not there is one line
on stderr and exit status 1, as is one lost while the command runs. Secrets are never
printed, nor a URL's query (it may hold a token).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from fleet.preflight import DATABASE_ERRORS, failure_reason, with_connection
from fleet.settings import DevSettings

if TYPE_CHECKING:  # imported where the command runs: the CLI loads no worker code before
    import asyncpg

    from workers.notification.settings import NotificationSettings
    from workers.notification.webhooks.endpoints import WebhookEndpoints
    from workers.notification.webhooks.state import EndpointState

    class WebhooksSettings(NotificationSettings, DevSettings):
        pass


Command = Callable[[argparse.Namespace, "WebhooksSettings"], int]
NOT_MIGRATED = "the database has no webhook_endpoints table: run `billing-fleet migrate`"
PATH_VARIABLE = "BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH"


def webhooks_settings_class() -> type[DevSettings]:
    """What ``webhooks`` reads: the notification worker's settings (the endpoints file)
    and dev's (the servers of a dev running in the same directory)."""
    from workers.notification.settings import NotificationSettings

    class WebhooksSettings(NotificationSettings, DevSettings):
        pass

    return WebhooksSettings


def add_webhooks_parser(commands: Any, dispatch: Command) -> None:
    webhooks = commands.add_parser(
        "webhooks", help="the outbound webhook endpoints: health, counts; enable one after a 410"
    )
    webhooks.set_defaults(handler=dispatch)
    sub = webhooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    listing = sub.add_parser(
        "list", help="each endpoint: filter, enabled or disabled, last success and failure, counts"
    )
    listing.set_defaults(webhooks_handler=_list)
    enable = sub.add_parser(
        "enable", help="enable an endpoint a 410 disabled; re-queue what failed since"
    )
    enable.add_argument("id", metavar="ID", help="the endpoint's id, as `webhooks list` prints it")
    enable.set_defaults(webhooks_handler=_enable)


def run_webhooks(args: argparse.Namespace, settings: WebhooksSettings) -> int:
    if not settings.database_url:
        print(
            "billing-fleet webhooks: set DATABASE_URL (or BILLING_DATABASE_URL), "
            "or run it next to `billing-fleet dev`",
            file=sys.stderr,
        )
        return 2
    command: Command = args.webhooks_handler
    return command(args, settings)


def _failed(action: str, exc: BaseException) -> int:
    reason = failure_reason(exc, missing_table=NOT_MIGRATED)
    print(f"billing-fleet webhooks {action}: {reason}", file=sys.stderr)
    return 1


def _list(args: argparse.Namespace, settings: WebhooksSettings) -> int:
    from workers.notification.webhooks import CHANNEL
    from workers.notification.webhooks.endpoints import EndpointsError, load_endpoints
    from workers.notification.webhooks.state import delivery_counts, endpoint_states

    path = settings.notification_webhook_endpoints_path
    if path is None:
        print(f"billing-fleet webhooks list: set {PATH_VARIABLE}", file=sys.stderr)
        return 2
    try:
        endpoints = load_endpoints(path)
    except EndpointsError as exc:
        print(f"billing-fleet webhooks list: {exc}", file=sys.stderr)
        return 1

    async def read(
        conn: asyncpg.Connection,
    ) -> tuple[dict[str, EndpointState], dict[str, dict[str, int]]]:
        return await endpoint_states(conn), await delivery_counts(conn, CHANNEL)

    assert settings.database_url
    try:
        states, counts = with_connection(settings.database_url, read)
    except DATABASE_ERRORS as exc:
        return _failed("list", exc)
    _print(endpoints, states, counts)
    return 0


def _print(
    endpoints: WebhookEndpoints,
    states: dict[str, EndpointState],
    counts: dict[str, dict[str, int]],
) -> None:
    configured = {e.id for e in endpoints.endpoints}
    others = sorted((set(states) | set(counts)) - configured)
    if not configured and not others:
        print("no webhook endpoints")
        return
    print("id\turl\tevents\tstate\tlast success\tlast failure\tpending\tfailed\tdead")
    rows: list[tuple[str, str, str, bool | None]] = [
        (e.id, _shown_url(e.url), ",".join(e.events) or "all", e.enabled)
        for e in endpoints.endpoints
    ]
    rows += [(endpoint_id, "-", "-", None) for endpoint_id in others]
    for endpoint_id, url, events, enabled in rows:
        state = states.get(endpoint_id)
        n = counts.get(endpoint_id, {})
        failure = "-"
        if state is not None and state.last_failure_at is not None:
            failure = f"{_when(state.last_failure_at)} {state.last_failure or ''}".strip()[:200]
        success = _when(state.last_success_at) if state is not None else "-"
        print(
            f"{endpoint_id}\t{url}\t{events}\t{_state(state, enabled)}\t{success}\t{failure}"
            f"\t{n.get('pending', 0)}\t{n.get('failed', 0)}\t{n.get('dead', 0)}"
        )


def _state(state: EndpointState | None, enabled: bool | None) -> str:
    if state is not None and state.disabled_at is not None:
        reason = f" ({state.disabled_reason})" if state.disabled_reason else ""
        return f"disabled since {_when(state.disabled_at)}{reason}"[:200]
    if enabled is None:
        return "not in the file"
    return "enabled" if enabled else "off (enabled: false)"


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "-"


def _shown_url(url: str) -> str:
    """``url`` without its query (a token may be there)."""
    parts = urlsplit(url)
    return parts._replace(query="..." if parts.query else "").geturl()[:120]


def _enable(args: argparse.Namespace, settings: WebhooksSettings) -> int:
    from workers.notification.webhooks import CHANNEL
    from workers.notification.webhooks.state import NotDisabled, enable

    endpoint_id = cast(str, args.id)
    assert settings.database_url
    try:
        requeued = with_connection(
            settings.database_url, lambda conn: enable(conn, endpoint_id, channel=CHANNEL)
        )
    except NotDisabled as exc:
        print(f"billing-fleet webhooks enable: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        return _failed("enable", exc)
    print(
        f"endpoint {endpoint_id} enabled: {requeued} deliveries that failed since it was "
        "disabled re-queued (pending, due now)"
    )
    return 0
