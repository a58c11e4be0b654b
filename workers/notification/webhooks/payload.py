"""What an endpoint receives: the event as a CloudEvent (JSON, structured mode), one
``Delivery`` per endpoint whose filter takes its type."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from pydantic_core import to_json

from contracts import BillingEvent, EntitlementChange, LedgerEvent, cloudevent_headers
from workers.notification.keys import webhook_key
from workers.notification.webhooks import CHANNEL
from workers.notification.webhooks.endpoints import Endpoint
from workers.runtime.deliveries.model import Delivery

CONTENT_TYPE: Final = "application/cloudevents+json"
"""The media type of a structured-mode CloudEvent (the HTTP binding's)."""
ENDPOINT_KEY: Final = "endpoint"
"""The delivery's metadata key naming its endpoint (its secrets are read at send time)."""
EVENT_TYPE_KEY: Final = "event_type"
"""The delivery's metadata key of the announced event's type (for listings)."""

# Kafka header -> structured-mode attribute, in the order they are written.
_ATTRIBUTES: Final = (
    ("ce_specversion", "specversion"),
    ("ce_id", "id"),
    ("ce_type", "type"),
    ("ce_source", "source"),
    ("ce_time", "time"),
    ("ce_subject", "subject"),
    ("content-type", "datacontenttype"),
)


def cloudevent_payload(
    event: BillingEvent | EntitlementChange | LedgerEvent, *, source: str
) -> dict[str, Any]:
    """``event`` as a structured-mode CloudEvent: the attributes ``cloudevent_headers``
    gives its Kafka record (the one builder; ``subject`` only when it has a customer),
    and the event itself as ``data``."""
    headers = cloudevent_headers(event, source=source)
    payload: dict[str, Any] = {
        attribute: headers[header] for header, attribute in _ATTRIBUTES if header in headers
    }
    payload["data"] = event.model_dump(mode="json")
    return payload


def webhook_deliveries(
    endpoints: Iterable[Endpoint],
    event: BillingEvent | EntitlementChange | LedgerEvent,
    *,
    source: str,
) -> list[Delivery]:
    """One signed-webhook delivery of ``event`` per endpoint in ``endpoints`` (what
    ``EndpointsFile.endpoints_for(event.type)`` chose), the body built once.

    Its key (``keys.webhook_key``: ``webhook:<endpoint id>:<event id>``) is the
    ``webhook-id`` and what makes it once per endpoint and event; its destination the
    endpoint's URL when it was queued (the sender posts to the file's current one); its
    metadata the endpoint's id (its secrets are read at send time) and the event type."""
    chosen = list(endpoints)
    if not chosen:
        return []
    body = to_json(cloudevent_payload(event, source=source))
    headers = {"content-type": CONTENT_TYPE}
    return [
        Delivery(
            CHANNEL,
            endpoint.url,
            webhook_key(endpoint.id, str(event.id)),
            body,
            headers,
            {ENDPOINT_KEY: endpoint.id, EVENT_TYPE_KEY: event.type},
        )
        for endpoint in chosen
    ]
