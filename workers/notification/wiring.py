"""The senders and webhook endpoints ``build`` uses when a caller passes none.

This module is the one seam for parts built beside this worker: the SMTP channel
(``workers/runtime/deliveries/smtp.py``: ``SmtpSender`` from the
``notification_smtp_*`` settings) and the signed webhooks
(``workers/notification/webhooks/``: ``SignedWebhookSender`` and the endpoints file's
``endpoints_for``). Until they are wired here, mails and webhooks wait: ``UnwiredSender``
answers every send with a retry, so the rows stay pending (not lost, not dead) and go out
once a real sender runs; and no endpoint is configured, so nothing is announced.
"""

from __future__ import annotations

from typing import Final

from workers.notification.announce import NoEndpoints, WebhookEndpoints
from workers.notification.notices import EMAIL_CHANNEL, WEBHOOK_CHANNEL
from workers.notification.settings import NotificationSettings
from workers.runtime.deliveries.channel import Sender
from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult

UNWIRED_WAIT_SECONDS: Final = 3600.0


class UnwiredSender:
    """A channel without its sender yet: every send is a retry an hour later."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy((UNWIRED_WAIT_SECONDS,), max_attempts=2**31 - 1)

    @property
    def timeout_seconds(self) -> float:
        return 1.0

    async def send(self, delivery: Delivery) -> SendResult:
        return SendResult(
            "retry",
            detail=f"no sender is wired for channel {self.channel} yet",
            retry_after=UNWIRED_WAIT_SECONDS,
        )

    async def aclose(self) -> None:
        return None


def default_channels(settings: NotificationSettings) -> dict[str, Sender]:
    return {
        EMAIL_CHANNEL: UnwiredSender(EMAIL_CHANNEL),
        WEBHOOK_CHANNEL: UnwiredSender(WEBHOOK_CHANNEL),
    }


def default_endpoints(settings: NotificationSettings) -> WebhookEndpoints:
    return NoEndpoints()
