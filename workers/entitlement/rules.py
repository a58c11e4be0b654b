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
       payment.succeeded = checkout.completed (0) < payment.refunded (1)
       entitlement_summary.updated (0)

3. the Stripe event id (plain string order) as the last, deterministic tie-break.

The subscription and customer precedences and the customer → user rule are shared with
the invoice worker: ``workers.customers``.

So a same-second redelivery of an older snapshot never wins over a newer one
(PostHog #98651), and ``updated`` before ``created`` cannot leave a subscription stuck
(laravel/cashier #1201): the created event simply loses.

Grants
------
A subscription grants the features of its items' catalog entries (or of the product's
metadata ``features``), limits times quantity for ``per_seat`` features. Products and sums
of limits saturate at PostgreSQL's bigint (``BIGINT_MAX``). Within one
subscription the base items combine by maximum and add-on items *add* their limits when
an item of one of their ``addon_for`` entries is in the same subscription. An add-on
without its base there (or bought one-off, when its entry says ``one_off``) is kept as an
``Addon`` of its source and extends the customer's base: see below. Access by status:

- ``active``: no expiry; ``trialing``: until ``trial_end``;
- ``past_due``: until the grace period after it *first* became past_due;
- cancel at period end: at most until the cancellation's effective time (period end);
- ``canceled``, ``unpaid``, ``incomplete``, ``incomplete_expired``, ``paused``, a set
  ``pause_collection``, or an immediate cancellation: nothing.

Expiries are stored as times, never decided against the clock, so the state a set of
events produces does not depend on when or in which order it was applied; only
``effective`` (what is usable now) takes ``now``.

Across a customer's sources the effective limit per feature is the maximum of the
sources' own grants (None, i.e. boolean/unlimited, wins), plus the limits of every
``Addon`` whose base the customer holds from any source at ``now``; the expiry is the
latest (None, no expiry, wins). Such an add-on counts until the earlier of its own window
and the latest end of its held bases: it stops when the base goes and counts again when
the base comes back.

A full refund (``amount_refunded`` reaches ``amount``) ends a one-off purchase; a partial
refund keeps it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

from contracts import Payment, Subscription, SubscriptionItem
from contracts.entitlements import EntitlementChangeType
from contracts.events import BIGINT_MAX
from workers.customers import CHECKOUT_RANK, CUSTOMER_EVENT_RANK, SUBSCRIPTION_EVENT_RANK
from workers.entitlement.catalog import Catalog, CatalogEntry, FeatureSpec, parse_metadata_features
from workers.runtime.spec import Poison

EVENT_RANK: Final[Mapping[str, int]] = {
    **SUBSCRIPTION_EVENT_RANK,  # shared with the invoice worker: workers.customers
    **CUSTOMER_EVENT_RANK,
    "payment.succeeded": 0,
    "checkout.completed": CHECKOUT_RANK,
    "payment.refunded": 1,
    "entitlement_summary.updated": 0,
}

GRANTING_STATUSES: Final = frozenset({"active", "trialing", "past_due"})
REVOKING_STATUSES: Final = frozenset(
    {"canceled", "unpaid", "incomplete", "incomplete_expired", "paused"}
)


# Mark, Grant and Effective are NamedTuples, not frozen dataclasses: a batch builds tens
# of thousands of them, and a frozen dataclass's __init__ costs several times a tuple's.
# Equality and Mark's order are the tuple's: field by field, in this order.


class Mark(NamedTuple):
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


class Grant(NamedTuple):
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

Bases = dict[str, datetime | None]
"""Base catalog entries a source holds -> until when (None: no end)."""


@dataclass(frozen=True)
class Addon:
    """An add-on held without its base in the same source: its grants add to the
    customer's while the customer holds one of ``addon_for`` from any source."""

    entry: str
    addon_for: tuple[str, ...]
    grants: Grants
    """Each with the add-on's own window (its source's access)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "addon_for": list(self.addon_for),
            "grants": {name: grant.to_json() for name, grant in sorted(self.grants.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Addon:
        grants = {name: Grant.from_json(value) for name, value in data["grants"].items()}
        return cls(str(data["entry"]), tuple(data["addon_for"]), grants)


@dataclass(frozen=True)
class SourceGrants:
    """What one source gives the customer: its own feature grants, the base entries it
    holds (for add-ons in other sources) and its add-ons without their base."""

    features: Grants = field(default_factory=dict)
    bases: Bases = field(default_factory=dict)
    addons: tuple[Addon, ...] = ()


class Effective(NamedTuple):
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
    """The sum, saturated at PostgreSQL's bigint (the column's type): beyond it is unlimited
    in practice, and an overflow would leave the event unappliable."""
    return None if a is None or b is None else min(a + b, BIGINT_MAX)


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


def _fold(
    limits: dict[str, int | None],
    amounts: Mapping[str, int | None],
    combine: Callable[[int | None, int | None], int | None],
) -> None:
    for name, amount in amounts.items():
        limits[name] = combine(limits[name], amount) if name in limits else amount


def _grants(entry: CatalogEntry, quantity: int, until: datetime | None) -> Grants:
    return {
        name: Grant(amount, until) for name, amount in _amounts(entry.features, quantity).items()
    }


def _addon(entry: CatalogEntry, quantity: int, until: datetime | None) -> Addon:
    return Addon(entry.name, tuple(entry.addon_for), _grants(entry, quantity, until))


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
) -> SourceGrants:
    """What ``sub`` grants; a subscription without access needs no catalog entry."""
    access, until = subscription_access_until(sub, past_due_since=past_due_since, grace=grace)
    if not access:
        return SourceGrants()
    items = [(entry_for_item(item, catalog), item.quantity) for item in sub.items]
    bases = {entry.name for entry, _ in items if not entry.is_addon}
    limits: dict[str, int | None] = {}
    for entry, quantity in items:
        if not entry.is_addon:
            _fold(limits, _amounts(entry.features, quantity), max_limit)
    detached: list[Addon] = []
    for entry, quantity in items:
        if entry.is_addon and bases.intersection(entry.addon_for):
            _fold(limits, _amounts(entry.features, quantity), add_limit)
        elif entry.is_addon:  # no base next to it: it extends one held elsewhere
            detached.append(_addon(entry, quantity, until))
    return SourceGrants(
        {name: Grant(limit, until) for name, limit in limits.items()},
        dict.fromkeys(bases, until),
        tuple(detached),
    )


# -- one-off purchases and Stripe's summary -------------------------------------------------


def one_off_grants(entry: CatalogEntry, *, quantity: int, purchased_at: datetime) -> SourceGrants:
    until = purchased_at + timedelta(days=entry.duration_days) if entry.duration_days else None
    if entry.is_addon:
        if not entry.one_off:
            raise Poison(
                f"catalog entry {entry.name!r} is an add-on not sold one-off: set "
                "`one_off: true` on it to allow one-off purchases"
            )
        return SourceGrants(addons=(_addon(entry, quantity, until),))
    return SourceGrants(_grants(entry, quantity, until), {entry.name: until})


def fully_refunded(payment: Payment) -> bool:
    """Refunded in full (ends a one-off purchase); a partial refund keeps it."""
    return payment.amount_refunded >= payment.amount


def summary_grants(lookup_keys: Iterable[str], *, previous: Grants, truncated: bool) -> Grants:
    """Stripe's active set replaces the previous one; a truncated list only adds."""
    grants: Grants = dict(previous) if truncated else {}
    grants.update({key: Grant(None, None) for key in lookup_keys})
    return grants


# -- the effective entitlements ---------------------------------------------------------------


def effective(sources: Mapping[str, SourceGrants], now: datetime) -> dict[str, Effective]:
    """Per feature, what the customer may use at ``now`` across all its sources: the
    highest own grant plus the add-ons whose base it holds (see the module docstring)."""
    held = _held_bases(sources, now)
    own: dict[str, Effective] = {}
    added: dict[str, Effective] = {}
    for source_id in sorted(sources):
        source = sources[source_id]
        for name, grant in source.features.items():
            _merge(own, name, grant, source_id, max_limit, now)
        for addon in source.addons:
            ends = [held[base] for base in addon.addon_for if base in held]
            if not ends:
                continue  # no base held: the add-on waits for one
            base_until = functools.reduce(latest, ends)
            for name, grant in addon.grants.items():
                window = Grant(grant.limit, earliest(grant.expires_at, base_until))
                _merge(added, name, window, source_id, add_limit, now)
    result = dict(own)
    for name, extra in added.items():
        base = result.get(name)
        result[name] = (
            extra
            if base is None
            else Effective(
                add_limit(base.limit, extra.limit),
                latest(base.expires_at, extra.expires_at),
                tuple(sorted({*base.sources, *extra.sources})),
            )
        )
    return result


def _held_bases(sources: Mapping[str, SourceGrants], now: datetime) -> Bases:
    """Base entry -> until when the customer holds it at ``now``, from any source."""
    held: Bases = {}
    for source in sources.values():
        for name, until in source.bases.items():
            if until is not None and until <= now:
                continue
            held[name] = latest(held[name], until) if name in held else until
    return held


def _merge(
    into: dict[str, Effective],
    name: str,
    grant: Grant,
    source_id: str,
    combine: Callable[[int | None, int | None], int | None],
    now: datetime,
) -> None:
    """Combine a grant of ``source_id`` into ``into`` unless it expired (callers go through
    sources in sorted order, so each feature's ``sources`` stays sorted)."""
    if grant.expires_at is not None and grant.expires_at <= now:
        return
    known = into.get(name)
    if known is None:
        into[name] = Effective(grant.limit, grant.expires_at, (source_id,))
        return
    sources = known.sources if source_id in known.sources else (*known.sources, source_id)
    into[name] = Effective(
        combine(known.limit, grant.limit), latest(known.expires_at, grant.expires_at), sources
    )


def next_expiry(sources: Mapping[str, SourceGrants], now: datetime) -> datetime | None:
    """The earliest end after ``now`` of a grant, a base or an add-on: when the effective
    set must be recomputed."""
    ends: list[datetime | None] = []
    for source in sources.values():  # runs per event: plain loops, no generators
        ends += [grant.expires_at for grant in source.features.values()]
        ends += source.bases.values()
        for addon in source.addons:
            ends += [grant.expires_at for grant in addon.grants.values()]
    return min([end for end in ends if end is not None and end > now], default=None)


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
