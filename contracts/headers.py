"""Kafka headers per the CloudEvents 1.0 Kafka protocol binding (binary mode)."""

from __future__ import annotations

from typing import Final

from contracts.events import BillingEvent

SPEC_VERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/json"


def cloudevent_headers(
    event: BillingEvent, *, source: str, traceparent: str | None = None
) -> dict[str, str]:
    """The ``ce_*`` headers for ``event``; ``traceparent`` is carried when the caller had one."""
    headers = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": str(event.id),
        "ce_type": event.type,
        "ce_source": source,
        "ce_time": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "content-type": CONTENT_TYPE,
    }
    if event.customer_id:
        headers["ce_subject"] = event.customer_id
    if traceparent:
        headers["traceparent"] = traceparent
    return headers
