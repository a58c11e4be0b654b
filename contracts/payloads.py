"""Which contract type each published topic carries: the one mapping that says what a
record of a topic is, for the documents that describe its payload (the workers' AsyncAPI
documents; ``contracts.schema_export.PUBLISHED`` holds the same types' adapters)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from contracts.entitlements import EntitlementChange
from contracts.events import BillingEvent
from contracts.ledger import LedgerEvent
from contracts.topics import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES

TOPIC_MODELS: Final[Mapping[str, Any]] = MappingProxyType(
    {BILLING_EVENTS: BillingEvent, ENTITLEMENT_CHANGES: EntitlementChange, INVOICES: LedgerEvent}
)
"""Topic → the type of its record values."""
