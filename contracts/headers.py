"""Kafka headers per the CloudEvents 1.0 Kafka protocol binding (binary mode).

``cloudevent_kafka_headers`` is the one builder: the gateway and every worker pass it the
event's attributes. ``cloudevent_headers`` is its convenience for a contract model.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

from contracts.entitlements import EntitlementChange
from contracts.events import BillingEvent
from contracts.ledger import LedgerEvent

SPEC_VERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/json"

HEADERS: Final = {
    "ce_specversion": f"CloudEvents version, always {SPEC_VERSION}.",
    "ce_id": "The event's id (the value's `id`): stable across redeliveries.",
    "ce_type": "The event's type (the value's `type`).",
    "ce_source": "The producer, a URI reference.",
    "ce_time": "When it happened (the value's `occurred_at`), RFC 3339 with an offset (`Z`: UTC).",
    "content-type": f"The value's media type, always {CONTENT_TYPE}.",
    "ce_subject": "The Stripe customer id, when the event has a customer.",
    "traceparent": "W3C trace context, when the producer had one.",
}
"""Every header the builder may set, in the order it sets them, with what it holds."""

REQUIRED_HEADERS: Final = ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time")


def cloudevent_kafka_headers(
    *,
    id: uuid.UUID | str,
    type: str,
    source: str,
    time: datetime,
    subject: str | None = None,
    traceparent: str | None = None,
) -> dict[str, str]:
    """The CloudEvents headers of one record; ``subject`` and ``traceparent`` are set only
    when given and not empty. ``time`` must be aware (UTC is written with ``Z``). Called
    per emitted change on a worker's hot path, so it builds one literal and checks little."""
    if time.tzinfo is None:
        raise ValueError("CloudEvents time needs a UTC offset: got a naive datetime")
    headers = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": str(id),
        "ce_type": type,
        "ce_source": source,
        "ce_time": time.isoformat().replace("+00:00", "Z"),
        "content-type": CONTENT_TYPE,
    }
    if subject:
        headers["ce_subject"] = subject
    if traceparent:
        headers["traceparent"] = traceparent
    return headers


def cloudevent_headers(
    event: BillingEvent | EntitlementChange | LedgerEvent,
    *,
    source: str,
    traceparent: str | None = None,
) -> dict[str, str]:
    """``cloudevent_kafka_headers`` for a contract model: its id, type, ``occurred_at`` and
    customer id (the subject)."""
    return cloudevent_kafka_headers(
        id=event.id,
        type=event.type,
        source=source,
        time=event.occurred_at,
        subject=event.customer_id,
        traceparent=traceparent,
    )
