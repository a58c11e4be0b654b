"""The in-memory working copy of customers' rows while a batch of events is applied.

``store.load`` reads the rows of the batch's customers once; the handler changes them here,
event by event in order, exactly as the SQL of one event at a time would; ``store.save``
then writes back only what changed. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workers.customers import user_of
from workers.entitlement.rules import Effective, Mark, PastDueTrack, SourceGrants


@dataclass(frozen=True)
class SourceRow:
    source_id: str
    kind: str
    status: str
    grants: SourceGrants
    mark: Mark
    snapshot: str | None = None
    """JSON of the newest subscription object applied (subscriptions only)."""
    past_due: PastDueTrack = field(default_factory=PastDueTrack)
    legacy: bool = False
    """Stored before bases and add-ons were (their columns are NULL): none are known."""


@dataclass(frozen=True)
class CustomerRow:
    customer_id: str
    metadata_user_id: str | None = None
    mark: Mark | None = None
    checkout_user_id: str | None = None
    checkout_mark: Mark | None = None

    @property
    def user(self) -> tuple[str | None, str | None]:
        """(user id, where it came from): metadata wins over checkout (``user_of``)."""
        return user_of(self.metadata_user_id, self.checkout_user_id)


@dataclass
class CustomerState:
    """One customer's rows (as loaded, then as changed) and what to write back."""

    customer_id: str
    row: CustomerRow | None = None
    user_id: str | None = None
    """``entitlement_customers.user_id``: what the change events name."""
    sources: dict[str, SourceRow] = field(default_factory=dict)
    entitlements: dict[str, Effective] = field(default_factory=dict)
    due_at: datetime | None = None
    row_changed: bool = False
    changed_sources: set[str] = field(default_factory=set)
    changed_features: dict[str, datetime] = field(default_factory=dict)
    """Feature -> ``updated_at`` of its last write; one gone from ``entitlements`` is deleted."""
    due_changed: bool = False

    def put_customer(self, row: CustomerRow) -> None:
        self.row, self.user_id, self.row_changed = row, row.user[0], True

    def put_source(self, source: SourceRow) -> None:
        self.sources[source.source_id] = source
        self.changed_sources.add(source.source_id)

    def grants(self) -> dict[str, SourceGrants]:
        """Source id -> what it grants, for every source of the customer."""
        return {source_id: row.grants for source_id, row in self.sources.items()}

    def put_entitlement(self, feature: str, value: Effective | None, now: datetime) -> None:
        """Set (or, with None, drop) the effective entitlement to ``feature``."""
        if value is None:
            self.entitlements.pop(feature, None)
        else:
            self.entitlements[feature] = value
        self.changed_features[feature] = now

    def set_due(self, due_at: datetime | None) -> None:
        self.due_at, self.due_changed = due_at, True
