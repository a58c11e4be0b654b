"""The notification worker's channels as its settings configure them: mail through one
SMTP relay (``workers/runtime/deliveries/smtp.py``), signed webhooks to the endpoints of
the endpoints file (``webhooks/``). The handler chooses endpoints from the same
``EndpointsFile`` the webhook sender signs with, so both see one reload of the file.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr

from workers.notification.notices import EMAIL_CHANNEL, WEBHOOK_CHANNEL
from workers.notification.settings import NotificationSettings, SmtpSecurity
from workers.notification.webhooks.endpoints import EndpointsFile
from workers.notification.webhooks.sender import WebhookSettings, webhook_sender
from workers.runtime.deliveries.channel import Sender
from workers.runtime.deliveries.model import RetryPolicy
from workers.runtime.deliveries.smtp import SmtpSender


class WiringError(ValueError):
    """Settings the channels cannot run with; the message names them."""


class ChannelSettings(WebhookSettings, Protocol):
    """What the channels read: the runtime's settings and the notification worker's."""

    @property
    def notification_smtp_host(self) -> str: ...
    @property
    def notification_smtp_port(self) -> int: ...
    @property
    def notification_smtp_security(self) -> SmtpSecurity: ...
    @property
    def notification_smtp_username(self) -> str | None: ...
    @property
    def notification_smtp_password(self) -> SecretStr | None: ...
    @property
    def notification_smtp_timeout_seconds(self) -> float: ...
    @property
    def notification_smtp_cafile(self) -> str | None: ...
    @property
    def notification_smtp_connections(self) -> int: ...
    @property
    def notification_smtp_backoff_seconds(self) -> list[float]: ...


def smtp_sender(settings: ChannelSettings) -> SmtpSender:
    """The ``email`` channel. A send (connecting included) is bounded by the SMTP timeout,
    which must be shorter than the delivery lease: a send outliving its lease would let
    another dispatcher claim the row and send the mail a second time."""
    timeout = settings.notification_smtp_timeout_seconds
    if settings.delivery_lease_seconds <= timeout:
        raise WiringError(
            "BILLING_DELIVERY_LEASE_SECONDS must be longer than "
            f"BILLING_NOTIFICATION_SMTP_TIMEOUT_SECONDS ({timeout:g} s): a mail's send "
            "would outlive its lease"
        )
    password = settings.notification_smtp_password
    backoff = tuple(settings.notification_smtp_backoff_seconds)
    return SmtpSender(
        settings.notification_smtp_host,
        settings.notification_smtp_port,
        # The first attempt at once, then one per wait: the last wait's failure is dead.
        policy=RetryPolicy(backoff, len(backoff) + 1),
        security=settings.notification_smtp_security,
        username=settings.notification_smtp_username,
        password=password.get_secret_value() if password is not None else None,
        timeout_seconds=timeout,
        cafile=settings.notification_smtp_cafile,
        max_connections=min(settings.notification_smtp_connections, settings.delivery_concurrency),
    )


def default_channels(
    settings: ChannelSettings, endpoints: EndpointsFile, *, worker: str
) -> dict[str, Sender]:
    """Both channels of ``worker``; ``endpoints`` is the file its handler chooses endpoints
    from."""
    try:
        webhooks = webhook_sender(settings, endpoints, worker=worker)
    except ValueError as exc:
        raise WiringError(str(exc)) from None
    return {EMAIL_CHANNEL: smtp_sender(settings), WEBHOOK_CHANNEL: webhooks}


def default_endpoints(settings: NotificationSettings) -> EndpointsFile:
    """The endpoints file (none configured: no endpoint, nothing is announced); a broken
    file stops the worker here, at startup."""
    return EndpointsFile(settings.notification_webhook_endpoints_path)
