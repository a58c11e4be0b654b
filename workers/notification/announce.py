"""Outbound webhooks: every consumed ``invoices.v1`` and ``entitlements.changes.v1`` event,
announced to the endpoints whose filter matches its type, as
``webhooks.payload.webhook_deliveries`` builds them (one per endpoint and event).

Billing events are not announced (they are Stripe's, normalized; the team's systems want
the ledger's and entitlements' facts), nor the notices themselves (they are mails).
Which endpoints want a type is the endpoints file's (``EndpointsFile.endpoints_for``);
``build`` takes any object with that method (``WebhookEndpoints``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from contracts import (
    ENTITLEMENT_CHANGES,
    INVOICES,
    EntitlementChange,
    LedgerEvent,
)
from workers.notification.webhooks.endpoints import Endpoint
from workers.notification.webhooks.payload import webhook_deliveries
from workers.runtime.deliveries.model import Delivery

SOURCES: Final = {
    INVOICES: "/billing-fleet/invoice",
    ENTITLEMENT_CHANGES: "/billing-fleet/entitlement",
}
"""The ``ce_source`` each announced topic's producer sets."""


class WebhookEndpoints(Protocol):
    """Which endpoints want events of a CloudEvents type (their filter matches it)."""

    def endpoints_for(self, event_type: str) -> Sequence[Endpoint]: ...


def announcements(
    endpoints: WebhookEndpoints, topic: str, event: LedgerEvent | EntitlementChange
) -> list[Delivery]:
    """The webhook deliveries of one consumed event (none if no endpoint wants its type)."""
    return webhook_deliveries(endpoints.endpoints_for(event.type), event, source=SOURCES[topic])
