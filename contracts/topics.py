"""Kafka topic names: the fleet's public addresses."""

from typing import Final

BILLING_EVENTS: Final = "billing.events.v1"
"""One normalized event per Stripe event, keyed by Stripe customer id."""

ENTITLEMENT_CHANGES: Final = "entitlements.changes.v1"
"""entitlement.granted|updated|revoked, keyed by Stripe customer id."""

INVOICES: Final = "invoices.v1"
"""Invoice and payment ledger changes for downstream accounting."""


def dead_letter_topic(topic: str, consumer_group: str) -> str:
    """Where a consumer group parks the messages of ``topic`` it cannot process."""
    return f"{topic}.{consumer_group}.dlt"
