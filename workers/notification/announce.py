"""Outbound webhooks: every consumed ``invoices.v1`` and ``entitlements.changes.v1`` event,
announced to the endpoints whose filter matches its type.

One ``Delivery`` per (endpoint, event) on channel ``webhook``: destination = the
endpoint's id (the signed sender looks its URL and secrets up by id when it sends, so a
secret rotation applies to queued messages), key ``webhook:<endpoint id>:<event id>``
(sent as ``webhook-id``), payload = the event as a structured-mode CloudEvent. Billing
events are not announced (they are Stripe's, normalized; the team's systems want the
ledger's and entitlements' facts), nor the notices themselves (they are mails).

Which endpoints want a type is the webhooks part's (``endpoints_for``): ``build`` takes any
object with that method (``WebhookEndpoints``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from pydantic_core import to_json

from contracts import (
    ENTITLEMENT_CHANGES,
    INVOICES,
    EntitlementChange,
    LedgerEvent,
)
from workers.notification.keys import webhook_key
from workers.notification.notices import WEBHOOK_CHANNEL
from workers.notification.webhooks.payload import CONTENT_TYPE, cloudevent_payload
from workers.runtime.deliveries.model import Delivery

SOURCES: Final = {
    INVOICES: "/billing-fleet/invoice",
    ENTITLEMENT_CHANGES: "/billing-fleet/entitlement",
}
"""The ``ce_source`` each announced topic's producer sets."""


class WebhookEndpoint(Protocol):
    @property
    def id(self) -> str: ...


class WebhookEndpoints(Protocol):
    """Which endpoints want events of a CloudEvents type (their filter matches it)."""

    def endpoints_for(self, event_type: str) -> Sequence[WebhookEndpoint]: ...


class NoEndpoints:
    """No endpoint wants anything: nothing is announced."""

    def endpoints_for(self, event_type: str) -> Sequence[WebhookEndpoint]:
        return ()


def announcements(
    endpoints: WebhookEndpoints, topic: str, event: LedgerEvent | EntitlementChange
) -> list[Delivery]:
    """The webhook deliveries of one consumed event (none if no endpoint wants its type)."""
    wanted = endpoints.endpoints_for(event.type)
    if not wanted:
        return []
    payload = to_json(cloudevent_payload(event, source=SOURCES[topic]))
    event_id = str(event.id)
    return [
        Delivery(
            channel=WEBHOOK_CHANNEL,
            destination=endpoint.id,
            idempotency_key=webhook_key(endpoint.id, event_id),
            payload=payload,
            headers={"content-type": CONTENT_TYPE},
            metadata={"event_type": event.type},
        )
        for endpoint in wanted
    ]
