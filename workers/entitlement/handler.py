"""The entitlement worker's handler: billing events in, entitlement changes out.

Per event type (everything else is acknowledged without effect):

- ``subscription.*``: the subscription (source = subscription id) takes the snapshot if
  it is newer than the one applied (see ``rules`` for the order), its grants are
  recomputed from the newest snapshot and the past_due streak, then the customer's
  effective entitlements.
- ``payment.succeeded`` without an invoice, ``checkout.completed`` with mode ``payment``
  and payment_status ``paid``: a one-off purchase when its metadata names ``price_id``,
  ``lookup_key`` or ``product_id`` (optional ``quantity``); naming nothing means it is not
  an entitlement purchase (ignored); naming something the catalog lacks is ``Poison``.
  Source = the payment intent id (so the checkout and the payment of one purchase are
  one source), else the charge or session id.
- ``payment.refunded`` without an invoice, refunded in full: the purchase's source grants
  nothing from then on (kept, status ``refunded``, even before the purchase is seen, so a
  late older purchase event cannot grant). A partial refund changes nothing.
- ``checkout.completed`` with a ``client_reference_id``: the customer's user, unless
  ``customer.metadata.user_id`` names one (metadata wins).
- ``customer.*``: ``metadata.user_id``, newest customer event wins; a ``customer.deleted``
  stub without metadata changes nothing.
- A change of the customer's user moves its current entitlements: ``entitlement.revoked``
  naming the previous user (when there was one), then ``entitlement.granted`` naming the
  new one (also when it is None, so a consumer keyed by customer ends where it was).
- ``entitlement_summary.updated``: source ``stripe:<customer>`` grants the listed lookup
  keys as boolean features (the set replaces the previous one; a truncated list only adds).

Each change of a customer's effective entitlements is returned as an
``entitlement.granted|updated|revoked`` for ``entitlements.changes.v1``.

``handle_batch`` is the one code path (``handle`` is a batch of one): it locks the batch's
customers, loads their rows (``store.load``), applies each event in order to that
in-memory copy (``state``) exactly as one event at a time would, then writes back what
changed (``store.save``). Subscription rows stored before sources recorded their bases
and add-ons are derived again from their snapshot when loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from pydantic import ValidationError

from contracts import (
    ENTITLEMENT_CHANGES,
    BillingEvent,
    CheckoutEvent,
    CustomerEvent,
    EntitlementSummaryEvent,
    PaymentEvent,
    Subscription,
    SubscriptionEvent,
    cloudevent_kafka_headers,
)
from contracts.entitlements import EntitlementChangeType, change_id_text, entitlement_change_json
from workers.customers import checkout_user, event_mark, newer, says_who
from workers.entitlement import rules, store
from workers.entitlement.catalog import Catalog
from workers.entitlement.rules import Effective, Mark, PastDueTrack, SourceGrants
from workers.entitlement.state import CustomerRow, CustomerState, SourceRow
from workers.runtime.spec import Outgoing, Poison

log = logging.getLogger(__name__)

CE_SOURCE = "/billing-fleet/entitlement"
REFUNDED = "refunded"  # a payment source's status once refunded in full
EXPIRE_BATCH = 500
"""Most customers one periodic run recomputes (the rest wait for the next run)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


Customers = Mapping[str, CustomerState]
"""The working copies of the rows of a batch's customers, by customer id."""


class EntitlementHandler:
    def __init__(
        self,
        catalog: Catalog,
        *,
        past_due_grace: timedelta,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.catalog = catalog
        self.grace = past_due_grace
        self.clock = clock

    # -- entry points --------------------------------------------------------------------

    async def handle(self, conn: asyncpg.Connection, event: BillingEvent) -> Sequence[Outgoing]:
        return await self.handle_batch(conn, [event])

    async def handle_batch(
        self, conn: asyncpg.Connection, events: Sequence[BillingEvent]
    ) -> list[Outgoing]:
        """The effects and changes of ``handle`` for each event in order, set-based: lock
        the batch's customers, load their rows, apply the events in memory, save."""
        ids = sorted({customer for event in events if (customer := _customer_touched(event))})
        customers: dict[str, CustomerState] = {}
        if ids:
            await store.lock_customers(conn, ids)
            customers = await self._load(conn, ids)
        out: list[Outgoing] = []
        for event in events:
            out += self._apply(customers, event)
        await store.save(conn, customers.values())
        return out

    async def expire(self, conn: asyncpg.Connection) -> Sequence[Outgoing]:
        """Recompute the customers whose grants expired; revocations have no Stripe cause."""
        now = self.clock()
        out: list[Outgoing] = []
        for customer_id, _ in await store.due_customers(conn, now, EXPIRE_BATCH):
            # Never wait for a customer a handler is working on: it recomputes anyway.
            if not await store.try_lock_customer(conn, customer_id):
                continue
            due = await store.due_at(conn, customer_id)
            if due is None or due > now:
                continue
            customers = await self._load(conn, [customer_id])
            out += self._recompute(
                customers[customer_id], now=now, cause=f"expiry:{due.isoformat()}", at=due, by=None
            )
            await store.save(conn, customers.values())
        return out

    async def _load(self, conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, CustomerState]:
        customers = await store.load(conn, ids)
        self._derive_legacy(customers.values())
        return customers

    def _derive_legacy(self, customers: Iterable[CustomerState]) -> None:
        """Subscription rows stored before bases and add-ons were get them from their
        snapshot, as their next event would; one the catalog no longer maps waits for it."""
        for customer in customers:
            for row in list(customer.sources.values()):
                if not row.legacy or row.snapshot is None:
                    continue
                sub = _stored_snapshot(row.snapshot, row.source_id)
                if sub is None:
                    continue
                try:
                    customer.put_source(self._subscription_row(sub, row.mark, row.past_due))
                except Poison as exc:
                    log.warning("subscription %s kept as stored: %s", sub.id, exc)

    def _apply(self, customers: Customers, event: BillingEvent) -> list[Outgoing]:
        match event:
            case SubscriptionEvent():
                return self._subscription(customers, event)
            case PaymentEvent():
                return self._payment(customers, event)
            case CheckoutEvent():
                return self._checkout(customers, event)
            case CustomerEvent():
                return self._customer(customers, event)
            case EntitlementSummaryEvent():
                return self._summary(customers, event)
            case _:
                return []

    # -- subscriptions -------------------------------------------------------------------

    def _subscription(self, customers: Customers, event: SubscriptionEvent) -> list[Outgoing]:
        customer = customers[_customer_of(event)]
        sub = event.subscription
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        row = customer.sources.get(sub.id)
        track = row.past_due if row is not None else PastDueTrack()
        track = track.observe(mark, past_due=sub.status == "past_due")
        if row is not None and row.snapshot is not None and mark <= row.mark:
            if track == row.past_due:
                log.debug("stale subscription event %s ignored", mark.event_id)
                return []
            # An older past_due event moved the streak's start: same snapshot, new grants.
            stored = _stored_snapshot(row.snapshot, sub.id)
            if stored is None:
                return []
            sub, mark = stored, row.mark
        customer.put_source(self._subscription_row(sub, mark, track))
        return self._recompute_for(customer, event)

    def _subscription_row(self, sub: Subscription, mark: Mark, track: PastDueTrack) -> SourceRow:
        grants = rules.subscription_grants(
            sub, self.catalog, past_due_since=track.since, grace=self.grace
        )
        return SourceRow(
            source_id=sub.id,
            kind="subscription",
            status="paused" if sub.pause_collection is not None else sub.status,
            grants=grants,
            mark=mark,
            snapshot=sub.model_dump_json(),
            past_due=track,
        )

    # -- one-off purchases ---------------------------------------------------------------

    def _payment(self, customers: Customers, event: PaymentEvent) -> list[Outgoing]:
        payment = event.payment
        if payment.invoice_id is not None:
            return []  # subscription invoices: the subscription's own events decide
        source_id = payment.payment_intent_id or payment.id
        if event.type == "payment.succeeded":
            return self._one_off(customers, event, source_id, payment.metadata)
        if event.type == "payment.refunded" and event.customer_id and rules.fully_refunded(payment):
            return self._refund(customers[event.customer_id], event, source_id)
        return []  # failures and partial refunds change no grant

    def _checkout(self, customers: Customers, event: CheckoutEvent) -> list[Outgoing]:
        checkout = event.checkout
        moved: list[Outgoing] = []
        mapped = checkout_user(event)
        if mapped is not None:
            customer_id, user = mapped
            moved = self._checkout_user(customers[customer_id], event, user)
        if checkout.mode != "payment" or checkout.payment_status != "paid":
            return moved
        source_id = checkout.payment_intent_id or checkout.id
        return moved + self._one_off(customers, event, source_id, checkout.metadata)

    def _one_off(
        self,
        customers: Customers,
        event: PaymentEvent | CheckoutEvent,
        source_id: str,
        metadata: dict[str, str],
    ) -> list[Outgoing]:
        named = {key: metadata.get(key) for key in ("price_id", "lookup_key", "product_id")}
        if not any(named.values()):
            return []  # not an entitlement purchase
        entry = self.catalog.resolve(
            price_id=named["price_id"],
            lookup_key=named["lookup_key"],
            product_id=named["product_id"],
        )
        if entry is None:
            described = ", ".join(f"{key} {value!r}" for key, value in named.items() if value)
            raise Poison(f"one-off purchase {source_id} names {described}: not in the catalog")
        quantity_text = metadata.get("quantity", "1")
        if not quantity_text.isdigit() or int(quantity_text) < 1:
            raise Poison(f"one-off purchase {source_id}: invalid quantity {quantity_text!r}")
        customer = customers[_customer_of(event)]
        grants = rules.one_off_grants(
            entry, quantity=int(quantity_text), purchased_at=event.occurred_at
        )
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        row = customer.sources.get(source_id)
        if row is not None and (row.status == REFUNDED or mark <= row.mark):
            return []  # a full refund is final, whatever the purchase events' times
        customer.put_source(SourceRow(source_id, "payment", "paid", grants, mark))
        return self._recompute_for(customer, event)

    def _refund(
        self, customer: CustomerState, event: PaymentEvent, source_id: str
    ) -> list[Outgoing]:
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        row = customer.sources.get(source_id)
        if row is not None and row.status == REFUNDED and mark <= row.mark:
            return []
        # Final: it wins over the purchase's events of any time, seen before or after (so
        # every delivery order ends refunded), and is kept for a purchase not seen yet.
        customer.put_source(SourceRow(source_id, "payment", REFUNDED, SourceGrants(), mark))
        return self._recompute_for(customer, event)

    # -- Stripe's entitlement summary ----------------------------------------------------

    def _summary(self, customers: Customers, event: EntitlementSummaryEvent) -> list[Outgoing]:
        customer = customers[_customer_of(event)]
        source_id = f"stripe:{customer.customer_id}"
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        row = customer.sources.get(source_id)
        if row is not None and mark <= row.mark:
            return []
        grants = rules.summary_grants(
            (entitlement.lookup_key for entitlement in event.summary.entitlements),
            previous=row.grants.features if row is not None else {},
            truncated=event.summary.truncated,
        )
        customer.put_source(SourceRow(source_id, "stripe", "active", SourceGrants(grants), mark))
        return self._recompute_for(customer, event)

    # -- users ---------------------------------------------------------------------------

    def _customer(self, customers: Customers, event: CustomerEvent) -> list[Outgoing]:
        stripe_customer = event.customer
        if not says_who(stripe_customer):
            return []  # the {id, deleted} stub says nothing about the user
        mark = Mark(*event_mark(event))
        customer = customers[stripe_customer.id]
        row = customer.row or CustomerRow(customer.customer_id)
        if not newer(mark, row.mark):
            return []
        new = CustomerRow(
            customer.customer_id,
            stripe_customer.user_id,
            mark,
            row.checkout_user_id,
            row.checkout_mark,
        )
        return self._put_user(customer, new, event)

    def _checkout_user(
        self, customer: CustomerState, event: CheckoutEvent, user: str
    ) -> list[Outgoing]:
        mark = Mark(*event_mark(event))
        row = customer.row or CustomerRow(customer.customer_id)
        if not newer(mark, row.checkout_mark):
            return []
        new = CustomerRow(customer.customer_id, row.metadata_user_id, row.mark, user, mark)
        return self._put_user(customer, new, event)

    def _put_user(
        self, customer: CustomerState, row: CustomerRow, event: BillingEvent
    ) -> list[Outgoing]:
        """Store the mapping. When it names another user, the current entitlements move:
        consumers keyed by user learn that the old one lost them and the new one got them."""
        old = customer.user_id
        if row.user[0] == old:
            customer.put_customer(row)
            return []
        stripe_id, at = event.source.stripe_event_id, event.occurred_at
        # Access that ended but was not swept yet is revoked first, under the previous
        # user: only what the customer holds now moves.
        out = self._recompute(
            customer, now=self.clock(), cause=f"{stripe_id}:before-move", at=at, by=stripe_id
        )
        customer.put_customer(row)
        held = sorted(customer.entitlements.items())
        if old is not None:
            cause = f"{stripe_id}:previous-user"
            out += [
                change_event(
                    customer.customer_id,
                    old,
                    "entitlement.revoked",
                    name,
                    None,
                    cause,
                    at,
                    by=stripe_id,
                )
                for name, _ in held
            ]
        cause, new = f"{stripe_id}:new-user", customer.user_id
        out += [
            change_event(
                customer.customer_id,
                new,
                "entitlement.granted",
                name,
                value,
                cause,
                at,
                by=stripe_id,
            )
            for name, value in held
        ]
        return out

    # -- effective entitlements ----------------------------------------------------------

    def _recompute_for(self, customer: CustomerState, event: BillingEvent) -> list[Outgoing]:
        stripe_id = event.source.stripe_event_id
        return self._recompute(
            customer, now=self.clock(), cause=stripe_id, at=event.occurred_at, by=stripe_id
        )

    def _recompute(
        self,
        customer: CustomerState,
        *,
        now: datetime,
        cause: str,
        at: datetime,
        by: str | None,
    ) -> list[Outgoing]:
        sources = customer.grants()
        desired = rules.effective(sources, now)
        changes = rules.diff(customer.entitlements, desired)
        customer.set_due(rules.next_expiry(sources, now))
        out: list[Outgoing] = []
        for change_type, feature, value in changes:
            customer.put_entitlement(feature, value, now)
            out.append(
                change_event(
                    customer.customer_id,
                    customer.user_id,
                    change_type,
                    feature,
                    value,
                    cause,
                    at,
                    by=by,
                )
            )
        return out


def change_event(
    customer_id: str,
    user_id: str | None,
    change_type: EntitlementChangeType,
    feature: str,
    value: Effective | None,
    cause: str,
    at: datetime,
    *,
    by: str | None,
) -> Outgoing:
    """The ``entitlements.changes.v1`` event, body and CloudEvents headers, for one feature's
    change (``value`` None: revoked); its id is stable for ``cause``."""
    change_id = change_id_text(cause, customer_id, feature)
    body = entitlement_change_json(
        id=change_id,
        type=change_type,
        occurred_at=at,
        customer_id=customer_id,
        user_id=user_id,
        feature=feature,
        entitled=value is not None,
        limit=value.limit if value is not None else None,
        expires_at=value.expires_at if value is not None else None,
        sources=list(value.sources) if value is not None else [],
        caused_by=by,
    )
    headers = cloudevent_kafka_headers(
        id=change_id, type=change_type, source=CE_SOURCE, time=at, subject=customer_id
    )
    return Outgoing(topic=ENTITLEMENT_CHANGES, key=customer_id, value=body, headers=headers)


def _stored_snapshot(snapshot: str, source_id: str) -> Subscription | None:
    """A subscription as stored, or None for one stored before the contract refused what
    it holds (a negative quantity, no items): its row stays as stored until the
    subscription's next event, rather than failing every event of its customer."""
    try:
        return Subscription.model_validate_json(snapshot)
    except ValidationError as exc:
        log.warning(
            "subscription %s kept as stored: its snapshot breaks the contract (%d errors)",
            source_id,
            exc.error_count(),
        )
        return None


def _customer_touched(event: BillingEvent) -> str | None:
    """The customer whose rows ``event`` may read or write, if any (locked and loaded)."""
    match event:
        case CustomerEvent():
            return event.customer.id
        case SubscriptionEvent() | PaymentEvent() | CheckoutEvent() | EntitlementSummaryEvent():
            return event.customer_id or None
        case _:
            return None


def _customer_of(event: BillingEvent) -> str:
    if not event.customer_id:
        raise Poison(f"{event.type} {event.source.stripe_event_id} has no customer to entitle")
    return event.customer_id
