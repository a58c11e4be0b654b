"""What ``billing-fleet dev`` prints once it serves: addresses, and ready-to-paste commands.

Secrets and tokens are printed only when ``dev`` generated them for this run; a
configured secret may be a real Stripe endpoint's or a real issuer's, and stays unshown.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import jwt

from fleet.command_settings import DevFleetSettings
from fleet.send_test_event import (
    DEFAULT_CUSTOMER_ID,
    DEFAULT_USER_ID,
    gateway_url,
    webhook_url,
)

TOKEN_LIFETIME = timedelta(hours=24)
SERVICE_SUBJECT = "billing-fleet-dev-service"


@dataclass(frozen=True)
class Generated:
    """What ``dev`` made up for this run because nothing was configured."""

    webhook_secret: str | None = None
    jwt_secret: str | None = None
    mailbox: Path | None = None
    """Where the dev mailbox writes the mails (no relay configured)."""


@dataclass(frozen=True)
class Tokens:
    user: str
    service: str


def redact_url(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def make_tokens(settings: DevFleetSettings, secret: str, now: float | None = None) -> Tokens:
    """HS256 tokens the gateway accepts: one for the test user, one with the service scope."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"iat": issued, "exp": issued + int(TOKEN_LIFETIME.total_seconds())}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    user = jwt.encode({**claims, "sub": DEFAULT_USER_ID}, secret, algorithm="HS256")
    service = jwt.encode(
        {**claims, "sub": SERVICE_SUBJECT, "scope": settings.jwt_service_scope},
        secret,
        algorithm="HS256",
    )
    return Tokens(user, service)


def _cli() -> str:
    """How to call this CLI from the user's shell (``tasks.py dev`` keeps it in .venv)."""
    return "billing-fleet" if shutil.which("billing-fleet") else sys.argv[0]


def _curl(token: str, url: str) -> str:
    return f"curl -H {shlex.quote(f'Authorization: Bearer {token}')} {url}"


def _mail(settings: DevFleetSettings, generated: Generated) -> str:
    if generated.mailbox is not None:
        port = getattr(settings, "notification_smtp_port", "?")
        return f"{generated.mailbox}/*.eml  (dev mailbox: smtp://127.0.0.1:{port})"
    host = getattr(settings, "notification_smtp_host", None)
    if host is None:  # no notification worker registered
        return "no mail is sent"
    return f"to the relay {host}:{getattr(settings, 'notification_smtp_port', '?')}"


def banner(
    settings: DevFleetSettings, generated: Generated, workers: dict[str, tuple[Path, ...]]
) -> str:
    """``settings`` are the resolved ones (servers started, secrets generated)."""
    base = gateway_url(settings)
    admin_port = settings.gateway_admin_port
    admin = gateway_url(settings, admin_port) if admin_port else base
    cli = _cli()
    if generated.webhook_secret:
        secret = f"{generated.webhook_secret}  (generated for this run)"
    else:
        secret = "from BILLING_STRIPE_WEBHOOK_SECRETS (not shown)"
    watched = sorted({str(path) for paths in workers.values() for path in paths})
    reload = f"; reloaded when {', '.join(watched)} changes" if watched else ""
    lines = [
        "",
        "billing-fleet dev",
        f"  webhook URL      {webhook_url(settings)}",
        f"  webhook secret   {secret}",
        f"  metrics          {admin}/metrics",
        f"  OpenAPI          {admin}/docs  ({admin}/openapi.json)",
        f"  AsyncAPI         {admin}/asyncapi.json",
        f"  Kafka bootstrap  {settings.kafka_bootstrap_servers}",
        f"  database         {redact_url(settings.database_url or '')}",
        f"  workers          {', '.join(workers) or 'none'}  (metrics on the gateway's{reload})",
        f"  mail             {_mail(settings, generated)}",
        f"  other terminals  {cli} dlt | deliveries | migrate | send-test-event find these "
        f"servers in {settings.dev_data_dir.resolve()}",
        f"  send a signed test event (customer {DEFAULT_CUSTOMER_ID}, user {DEFAULT_USER_ID}):",
        f"    {cli} send-test-event"
        + ("" if generated.webhook_secret else "  # with BILLING_STRIPE_WEBHOOK_SECRETS set there"),
    ]
    if generated.jwt_secret:
        tokens = make_tokens(settings, generated.jwt_secret)
        customer_url = f"{base}/v1/customers/{DEFAULT_CUSTOMER_ID}/entitlements"
        hours = int(TOKEN_LIFETIME.total_seconds() // 3600)
        lines += [
            f"  JWT secret       {generated.jwt_secret}  (generated for this run, HS256)",
            f"  read the test user's entitlements (tokens valid {hours} h):",
            f"    {_curl(tokens.user, f'{base}/v1/entitlements')}",
            f"  read the test customer's as a service (scope {settings.jwt_service_scope}):",
            f"    {_curl(tokens.service, customer_url)}",
        ]
    else:
        lines.append(
            f"  read API         {base}/v1/entitlements with a token of your configured "
            "BILLING_JWT_HS256_SECRET or JWKS"
        )
    lines += ["  Ctrl-C (or closing the terminal) stops everything started here.", ""]
    return "\n".join(lines)
