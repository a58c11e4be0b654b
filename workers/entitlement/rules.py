"""Pure entitlement decisions: no I/O, no clock (``now`` is always passed in).

Order of events
---------------
Stripe delivers out of order and redelivers. Every source object (a subscription, a
one-off payment, Stripe's entitlement summary of a customer, a customer's user mapping)
keeps the ``Mark`` of the newest event applied to it and ignores anything not newer.
Marks compare by

1. ``occurred_at`` (Stripe's ``event.created``, one-second resolution), then
2. the precedence rank of the event type, for events of the same second::

       subscription.activated (0) < subscription.updated = subscription.trial_will_end (1)
         < subscription.paused = subscription.resumed (2) < subscription.canceled (3)
       customer.created (0) < customer.updated (1) < customer.deleted (2)
       payment.succeeded = checkout.completed (0); entitlement_summary.updated (0)

3. the Stripe event id (plain string order) as the last, deterministic tie-break.

So a same-second redelivery of an older snapshot never wins over a newer one
(PostHog #98651), and ``updated`` before ``created`` cannot leave a subscription stuck
(laravel/cashier #1201): the created event simply loses.

Grants
------
A subscription grants the features of its items' catalog entries (or of the product's
metadata ``features``), limits times quantity for ``per_seat`` features. Within one
subscription the base items combine by maximum and add-on items *add* their limits,
provided an item of one of their ``addon_for`` entries is in the same subscription (an
add-on without its base grants nothing). Access by status:

- ``active``: no expiry; ``trialing``: until ``trial_end``;
- ``past_due``: until the grace period after it *first* became past_due;
- cancel at period end: at most until the cancellation's effective time (period end);
- ``canceled``, ``unpaid``, ``incomplete``, ``incomplete_expired``, ``paused``, a set
  ``pause_collection``, or an immediate cancellation: nothing.

Expiries are stored as times, never decided against the clock, so the state a set of
events produces does not depend on when or in which order it was applied; only
``effective`` (what is usable now) takes ``now``.

Across a customer's sources the effective limit per feature is the maximum (None, i.e.
boolean/unlimited, wins) and the expiry the latest (None, no expiry, wins).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from contracts import Subscription, SubscriptionItem
from contracts.entitlements import EntitlementChangeType
from workers.entitlement.catalog import Catalog, CatalogEntry, FeatureSpec, parse_metadata_features
from workers.runtime.spec import Poison

EVENT_RANK: Final[Mapping[str, int]] = {
    "subscription.activated": 0,
    "subscription.updated": 1,
    "subscription.trial_will_end": 1,
    "subscription.paused": 2,
    "subscription.resumed": 2,
    "subscription.canceled": 3,
    "customer.created": 0,
    "customer.updated": 1,
    "customer.deleted": 2,
    "payment.succeeded": 0,
    "checkout.completed": 0,
    "entitlement_summary.updated": 0,
}

GRANTING_STATUSES: Final = frozenset({"active", "trialing", "past_due"})
REVOKING_STATUSES: Final = frozenset(
    {"canceled", "unpaid", "incomplete", "incomplete_expired", "paused"}
)


@dataclass(frozen=True, order=True)
class Mark:
    """Position of an event in a source's history: (time, precedence, Stripe event id)."""

    at: datetime
    rank: int
    event_id: str

    @classmethod
    def of(cls, event_type: str, at: datetime, event_id: str) -> Mark:
        return cls(at, EVENT_RANK[event_type], event_id)

    def to_json(self) -> list[Any]:
        return [self.at.isoformat(), self.rank, self.event_id]

    @classmethod
    def from_json(cls, data: list[Any]) -> Mark:
        return cls(datetime.fromisoformat(data[0]), int(data[1]), str(data[2]))


@dataclass(frozen=True)
class Grant:
    limit: int | None
    """None: a boolean feature (or unlimited)."""
    expires_at: datetime | None
    """None: until further notice."""

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Grant:
        expires = data.get("expires_at")
        return cls(data.get("limit"), datetime.fromisoformat(expires) if expires else None)


Grants = dict[str, Grant]


@dataclass(frozen=True)
class Effective:
    """One ``entitlements`` row."""

    limit: int | None
    expires_at: datetime | None
    sources: tuple[str, ...]


# -- past_due tracking ----------------------------------------------------------------------


@dataclass(frozen=True)
class PastDueTrack:
    """When a subscription first became past_due, whatever order its events came in.

    ``last_ok`` is the newest event that was not past_due; ``due`` holds the past_due
    events after it. The streak began at the earliest of them. The result depends only on
    the set of events seen, never on their order.
    """

    last_ok: Mark | None = None
    due: tuple[Mark, ...] = field(default_factory=tuple)

    def observe(self, mark: Mark, *, past_due: bool) -> PastDueTrack:
        if past_due:
            if self.last_ok is not None and mark <= self.last_ok:
                return self
            return PastDueTrack(self.last_ok, tuple(sorted({*self.due, mark})))
        if self.last_ok is not None and mark <= self.last_ok:
            return self
        return PastDueTrack(mark, tuple(m for m in self.due if m > mark))

    @property
    def since(self) -> datetime | None:
        return self.due[0].at if self.due else None

    def to_json(self) -> dict[str, Any]:
        return {
            "last_ok": self.last_ok.to_json() if self.last_ok else None,
            "due": [m.to_json() for m in self.due],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PastDueTrack:
        last_ok = data.get("last_ok")
        return cls(
            Mark.from_json(last_ok) if last_ok else None,
            tuple(Mark.from_json(m) for m in data.get("due", [])),
        )


# -- limits and expiries ------------------------------------------------------------------


def max_limit(a: int | None, b: int | None) -> int | None:
    """The larger limit; None (boolean/unlimited) is the largest."""
    return None if a is None or b is None else max(a, b)


def add_limit(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later expiry; None (no expiry) is the latest."""
    return None if a is None or b is None else max(a, b)


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


# -- subscriptions ------------------------------------------------------------------------


def entry_for_item(item: SubscriptionItem, catalog: Catalog) -> CatalogEntry:
    """The catalog entry of an item, else one made from the product's ``features`` metadata.

    Raises ``Poison`` naming the price and product when neither knows it.
    """
    entry = catalog.resolve(
        price_id=item.price_id, lookup_key=item.lookup_key, product_id=item.product_id
    )
    if entry is not None:
        return entry
    what = f"price {item.price_id!r} (lookup key {item.lookup_key!r}, product {item.product_id!r})"
    raw = item.product_metadata.get("features")
    if raw is None:
        raise Poison(
            f"{what} is not in the entitlement catalog and its product has no 'features' "
            "metadata: add it to the catalog"
        )
    try:
        features = parse_metadata_features(raw)
    except ValueError as exc:
        raise Poison(f"{what}: product metadata 'features' is invalid: {exc}") from exc
    return CatalogEntry(name=f"product:{item.product_id}", features=features)


def _amounts(features: Mapping[str, FeatureSpec], quantity: int) -> dict[str, int | None]:
    return {name: spec.amount(quantity) for name, spec in features.items()}


def subscription_limits(sub: Subscription, catalog: Catalog) -> dict[str, int | None]:
    """Feature -> limit the subscription's items grant while it has access."""
    items = [(entry_for_item(item, catalog), item.quantity) for item in sub.items]
    limits: dict[str, int | None] = {}
    for entry, quantity in items:
        if entry.is_addon:
            continue
        for name, amount in _amounts(entry.features, quantity).items():
            limits[name] = max_limit(limits[name], amount) if name in limits else amount
    bases = {entry.name for entry, _ in items if not entry.is_addon}
    for entry, quantity in items:
        if not entry.is_addon or not bases.intersection(entry.addon_for):
            continue
        for name, amount in _amounts(entry.features, quantity).items():
            limits[name] = add_limit(limits[name], amount) if name in limits else amount
    return limits


def subscription_access_until(
    sub: Subscription, *, past_due_since: datetime | None, grace: timedelta
) -> tuple[bool, datetime | None]:
    """(has access at all, until when: None = no end)."""
    if sub.pause_collection is not None or sub.status in REVOKING_STATUSES:
        return False, None
    if sub.status not in GRANTING_STATUSES:
        raise Poison(f"subscription {sub.id}: unknown status {sub.status!r}")
    if sub.cancellation is not None and sub.cancellation.mode == "immediately":
        return False, None
    until: datetime | None = None
    if sub.status == "trialing":
        until = sub.trial_end
    elif sub.status == "past_due":
        if past_due_since is None:
            raise ValueError("a past_due subscription needs past_due_since")
        until = past_due_since + grace
    if sub.cancellation is not None:  # at period end
        until = earliest(until, sub.cancellation.effective_at or sub.current_period_end)
    return True, until


def subscription_grants(
    sub: Subscription, catalog: Catalog, *, past_due_since: datetime | None, grace: timedelta
) -> Grants:
    """What ``sub`` grants; a subscription without access needs no catalog entry."""
    access, until = subscription_access_until(sub, past_due_since=past_due_since, grace=grace)
    if not access:
        return {}
    return {name: Grant(limit, until) for name, limit in subscription_limits(sub, catalog).items()}


# -- one-off purchases and Stripe's summary -------------------------------------------------


def one_off_grants(entry: CatalogEntry, *, quantity: int, purchased_at: datetime) -> Grants:
    if entry.is_addon:
        raise Poison(
            f"catalog entry {entry.name!r} is an add-on: add-ons extend a subscription's base "
            "item and cannot be bought alone"
        )
    until = purchased_at + timedelta(days=entry.duration_days) if entry.duration_days else None
    return {
        name: Grant(amount, until) for name, amount in _amounts(entry.features, quantity).items()
    }


def summary_grants(lookup_keys: Iterable[str], *, previous: Grants, truncated: bool) -> Grants:
    """Stripe's active set replaces the previous one; a truncated list only adds."""
    grants: Grants = dict(previous) if truncated else {}
    grants.update({key: Grant(None, None) for key in lookup_keys})
    return grants


# -- the effective entitlements ---------------------------------------------------------------


def effective(sources: Mapping[str, Grants], now: datetime) -> dict[str, Effective]:
    """Per feature, what the customer may use at ``now`` across all its sources."""
    result: dict[str, Effective] = {}
    for source_id in sorted(sources):
        for name, grant in sources[source_id].items():
            if grant.expires_at is not None and grant.expires_at <= now:
                continue
            known = result.get(name)
            if known is None:
                result[name] = Effective(grant.limit, grant.expires_at, (source_id,))
            else:
                result[name] = Effective(
                    max_limit(known.limit, grant.limit),
                    latest(known.expires_at, grant.expires_at),
                    (*known.sources, source_id),
                )
    return result


def next_expiry(sources: Mapping[str, Grants], now: datetime) -> datetime | None:
    """The earliest grant expiry after ``now``: when the effective set must be recomputed."""
    future = [
        grant.expires_at
        for grants in sources.values()
        for grant in grants.values()
        if grant.expires_at is not None and grant.expires_at > now
    ]
    return min(future, default=None)


def diff(
    current: Mapping[str, Effective], desired: Mapping[str, Effective]
) -> list[tuple[EntitlementChangeType, str, Effective | None]]:
    """(``entitlement.granted|updated|revoked``, feature, new value) sorted by feature."""
    changes: list[tuple[EntitlementChangeType, str, Effective | None]] = []
    for name in sorted(set(current) | set(desired)):
        old, new = current.get(name), desired.get(name)
        if old is None and new is not None:
            changes.append(("entitlement.granted", name, new))
        elif old is not None and new is None:
            changes.append(("entitlement.revoked", name, None))
        elif old != new:
            changes.append(("entitlement.updated", name, new))
    return changes
