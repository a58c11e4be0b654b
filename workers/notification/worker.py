"""Entry point of the notification worker: ``build(settings) -> WorkerSpec`` (its
declaration, ``declaration.py``, names it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from contracts import BILLING_EVENTS
from workers.notification.announce import WebhookEndpoints
from workers.notification.declaration import DECLARATION
from workers.notification.handler import NotificationHandler
from workers.notification.mail import MailIdentity
from workers.notification.notices import EMAIL_CHANNEL, WEBHOOK_CHANNEL, enabled_notices
from workers.notification.retention import INTERVAL_SECONDS, Retention
from workers.notification.rules import valid_address
from workers.notification.settings import NotificationSettings
from workers.notification.templates import NoticeTemplates, check_templates
from workers.notification.webhooks.endpoints import EndpointsFile
from workers.notification.wiring import WiringError, default_channels, default_endpoints
from workers.runtime.deliveries.channel import Sender
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import (
    Subscription,
    WorkerSpec,
    on_entitlement_changes,
    on_invoices,
)

NAME = DECLARATION.name
CHANNELS = (EMAIL_CHANNEL, WEBHOOK_CHANNEL)


class NotificationConfigError(ValueError):
    """A setting the worker cannot run with; the message names it."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build(
    settings: NotificationSettings,
    channels: Mapping[str, Sender] | None = None,
    endpoints: WebhookEndpoints | None = None,
    clock: Callable[[], datetime] = _utcnow,
    *,
    name: str = NAME,
) -> WorkerSpec:
    """The worker. ``channels`` are its senders by channel name (``email``, ``webhook``)
    and ``endpoints`` says which webhook endpoints want which event types; by default the
    SMTP relay's and the signed webhooks' senders and the endpoints file of the settings
    (``wiring``). ``clock`` dates the mails (tests fix it). ``name`` is the worker's
    name, its rows' ``worker``: what the webhook sender's 410 bookkeeping and the
    retention job look at (another name only for a copy of the worker, e.g. a test's).

    Fails here, at startup, with one line: a notice template that does not compile or
    render (an unknown name), an unknown notice in ``notification_enabled``, a From or
    Reply-To that is no address, or a channel without a sender."""
    enabled = enabled_notices(settings.notification_enabled)
    identity = mail_identity(settings)
    templates = NoticeTemplates(settings.notification_templates_dir)
    common = common_context(settings)
    check_templates(templates, common)
    endpoints = default_endpoints(settings) if endpoints is None else endpoints
    if channels is None:
        channels = real_channels(settings, endpoints, worker=name)
    chosen = dict(channels)
    missing = [channel for channel in CHANNELS if channel not in chosen]
    if missing:
        raise NotificationConfigError(f"no sender for channel(s) {', '.join(missing)}")
    handler = NotificationHandler(
        templates=templates,
        identity=identity,
        common=common,
        enabled=enabled,
        receipt_url=settings.notification_receipt_url,
        endpoints=endpoints,
        clock=clock,
    )
    return WorkerSpec(
        name=name,
        subscriptions=(
            Subscription(
                BILLING_EVENTS, handler.handle_billing, handle_batch=handler.handle_billing_batch
            ),
            on_invoices(handler.handle_ledger, handler.handle_ledger_batch),
            on_entitlement_changes(handler.handle_change),
        ),
        emits=DECLARATION.emits,
        channels=chosen,
        periodic=Retention(name, settings.notification_retention_days),
        periodic_interval_seconds=INTERVAL_SECONDS,
    )


def real_channels(
    settings: NotificationSettings, endpoints: WebhookEndpoints, *, worker: str = NAME
) -> dict[str, Sender]:
    """``wiring``'s senders of worker ``worker``: they need the runtime's settings too
    (``worker NAME`` reads both) and sign with the endpoints file the handler chooses
    from."""
    if not isinstance(settings, RuntimeSettings):
        raise NotificationConfigError("the SMTP and webhook senders need the runtime's settings")
    if not isinstance(endpoints, EndpointsFile):
        raise NotificationConfigError("the webhook sender signs with an EndpointsFile")
    try:
        return default_channels(settings, endpoints, worker=worker)
    except WiringError as exc:
        raise NotificationConfigError(str(exc)) from None


def mail_identity(settings: NotificationSettings) -> MailIdentity:
    for variable, value in (
        ("BILLING_NOTIFICATION_MAIL_FROM", settings.notification_mail_from),
        ("BILLING_NOTIFICATION_REPLY_TO", settings.notification_reply_to),
    ):
        if value is not None and not valid_address(value):
            raise NotificationConfigError(f"{variable} {value!r} is not an e-mail address")
    return MailIdentity(
        sender=settings.notification_mail_from,
        display_name=settings.notification_company_name,
        reply_to=settings.notification_reply_to,
        unsubscribe_url=settings.notification_links.get("unsubscribe"),
    )


def common_context(settings: NotificationSettings) -> dict[str, Any]:
    """What every template sees besides its notice: the company and the links."""
    return {
        "company": settings.notification_company_name,
        "links": dict(settings.notification_links),
    }
