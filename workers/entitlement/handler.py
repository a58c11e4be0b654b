"""The entitlement worker's handler: one billing event in, entitlement changes out.

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
- ``checkout.completed`` with a ``client_reference_id``: the customer's user, unless
  ``customer.metadata.user_id`` names one (metadata wins).
- ``customer.*``: ``metadata.user_id``, newest customer event wins; a ``customer.deleted``
  stub without metadata changes nothing.
- ``entitlement_summary.updated``: source ``stripe:<customer>`` grants the listed lookup
  keys as boolean features (the set replaces the previous one; a truncated list only adds).

Each change of a customer's effective entitlements is returned as an
``entitlement.granted|updated|revoked`` for ``entitlements.changes.v1``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from contracts import (
    ENTITLEMENT_CHANGES,
    BillingEvent,
    CheckoutEvent,
    CustomerEvent,
    EntitlementChange,
    EntitlementSummaryEvent,
    PaymentEvent,
    Subscription,
    SubscriptionEvent,
    change_id_for,
)
from workers.entitlement import rules, store
from workers.entitlement.catalog import Catalog
from workers.entitlement.rules import Mark, PastDueTrack
from workers.runtime.spec import Outgoing, Poison

log = logging.getLogger(__name__)

CE_SOURCE = "/billing-fleet/entitlement"
EXPIRE_BATCH = 500
"""Most customers one periodic run recomputes (the rest wait for the next run)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        match event:
            case SubscriptionEvent():
                return await self._subscription(conn, event)
            case PaymentEvent():
                return await self._payment(conn, event)
            case CheckoutEvent():
                return await self._checkout(conn, event)
            case CustomerEvent():
                await self._customer(conn, event)
                return []
            case EntitlementSummaryEvent():
                return await self._summary(conn, event)
            case _:
                return []

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
            out += await self._recompute(
                conn, customer_id, now=now, cause=f"expiry:{due.isoformat()}", at=due, by=None
            )
        return out

    # -- subscriptions -------------------------------------------------------------------

    async def _subscription(
        self, conn: asyncpg.Connection, event: SubscriptionEvent
    ) -> list[Outgoing]:
        customer_id = _customer_of(event)
        sub = event.subscription
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        await store.lock_customer(conn, customer_id)
        row = await store.get_source(conn, customer_id, sub.id)
        track = row.past_due if row is not None else PastDueTrack()
        track = track.observe(mark, past_due=sub.status == "past_due")
        if row is not None and row.snapshot is not None and mark <= row.mark:
            if track == row.past_due:
                log.debug("stale subscription event %s ignored", mark.event_id)
                return []
            # An older past_due event moved the streak's start: same snapshot, new grants.
            sub, mark = Subscription.model_validate_json(row.snapshot), row.mark
        grants = rules.subscription_grants(
            sub, self.catalog, past_due_since=track.since, grace=self.grace
        )
        source = store.SourceRow(
            source_id=sub.id,
            kind="subscription",
            status="paused" if sub.pause_collection is not None else sub.status,
            grants=grants,
            mark=mark,
            snapshot=sub.model_dump_json(),
            past_due=track,
        )
        await store.put_source(conn, customer_id, source)
        return await self._recompute_for(conn, customer_id, event)

    # -- one-off purchases ---------------------------------------------------------------

    async def _payment(self, conn: asyncpg.Connection, event: PaymentEvent) -> list[Outgoing]:
        payment = event.payment
        if event.type != "payment.succeeded" or payment.invoice_id is not None:
            return []  # failures, refunds and subscription invoices grant nothing here
        source_id = payment.payment_intent_id or payment.id
        return await self._one_off(conn, event, source_id, payment.metadata)

    async def _checkout(self, conn: asyncpg.Connection, event: CheckoutEvent) -> list[Outgoing]:
        checkout = event.checkout
        if checkout.client_reference_id and event.customer_id:
            await self._checkout_user(conn, event, checkout.client_reference_id)
        if checkout.mode != "payment" or checkout.payment_status != "paid":
            return []
        source_id = checkout.payment_intent_id or checkout.id
        return await self._one_off(conn, event, source_id, checkout.metadata)

    async def _one_off(
        self,
        conn: asyncpg.Connection,
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
        customer_id = _customer_of(event)
        grants = rules.one_off_grants(
            entry, quantity=int(quantity_text), purchased_at=event.occurred_at
        )
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        await store.lock_customer(conn, customer_id)
        row = await store.get_source(conn, customer_id, source_id)
        if row is not None and mark <= row.mark:
            return []
        source = store.SourceRow(source_id, "payment", "paid", grants, mark)
        await store.put_source(conn, customer_id, source)
        return await self._recompute_for(conn, customer_id, event)

    # -- Stripe's entitlement summary ----------------------------------------------------

    async def _summary(
        self, conn: asyncpg.Connection, event: EntitlementSummaryEvent
    ) -> list[Outgoing]:
        customer_id = _customer_of(event)
        source_id = f"stripe:{customer_id}"
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        await store.lock_customer(conn, customer_id)
        row = await store.get_source(conn, customer_id, source_id)
        if row is not None and mark <= row.mark:
            return []
        grants = rules.summary_grants(
            (entitlement.lookup_key for entitlement in event.summary.entitlements),
            previous=row.grants if row is not None else {},
            truncated=event.summary.truncated,
        )
        await store.put_source(
            conn, customer_id, store.SourceRow(source_id, "stripe", "active", grants, mark)
        )
        return await self._recompute_for(conn, customer_id, event)

    # -- users ---------------------------------------------------------------------------

    async def _customer(self, conn: asyncpg.Connection, event: CustomerEvent) -> None:
        customer = event.customer
        if customer.deleted and not customer.metadata:
            return  # the {id, deleted} stub says nothing about the user
        mark = Mark.of(event.type, event.occurred_at, event.source.stripe_event_id)
        await store.lock_customer(conn, customer.id)
        row = await store.get_customer(conn, customer.id) or store.CustomerRow(customer.id)
        if row.mark is not None and mark <= row.mark:
            return
        await store.put_customer(
            conn,
            store.CustomerRow(
                customer.id, customer.user_id, mark, row.checkout_user_id, row.checkout_mark
            ),
        )

    async def _checkout_user(
        self, conn: asyncpg.Connection, event: CheckoutEvent, user: str
    ) -> None:
        customer_id = _customer_of(event)
        mark = Mark(event.occurred_at, 0, event.source.stripe_event_id)
        await store.lock_customer(conn, customer_id)
        row = await store.get_customer(conn, customer_id) or store.CustomerRow(customer_id)
        if row.checkout_mark is not None and mark <= row.checkout_mark:
            return
        await store.put_customer(
            conn, store.CustomerRow(customer_id, row.metadata_user_id, row.mark, user, mark)
        )

    # -- effective entitlements ----------------------------------------------------------

    async def _recompute_for(
        self, conn: asyncpg.Connection, customer_id: str, event: BillingEvent
    ) -> list[Outgoing]:
        stripe_id = event.source.stripe_event_id
        return await self._recompute(
            conn, customer_id, now=self.clock(), cause=stripe_id, at=event.occurred_at, by=stripe_id
        )

    async def _recompute(
        self,
        conn: asyncpg.Connection,
        customer_id: str,
        *,
        now: datetime,
        cause: str,
        at: datetime,
        by: str | None,
    ) -> list[Outgoing]:
        sources = await store.grants_of(conn, customer_id)
        desired = rules.effective(sources, now)
        current = await store.entitlements_of(conn, customer_id)
        changes = rules.diff(current, desired)
        await store.set_due(conn, customer_id, rules.next_expiry(sources, now))
        if not changes:
            return []
        user_id = await store.user_id_of(conn, customer_id)
        out: list[Outgoing] = []
        for change_type, feature, value in changes:
            if value is None:
                await store.delete_entitlement(conn, customer_id, feature)
            else:
                await store.put_entitlement(conn, customer_id, feature, value, now)
            change = EntitlementChange(
                id=change_id_for(cause, customer_id, feature),
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
            out.append(_outgoing(change))
        return out


def _customer_of(event: BillingEvent) -> str:
    if not event.customer_id:
        raise Poison(f"{event.type} {event.source.stripe_event_id} has no customer to entitle")
    return event.customer_id


def _outgoing(change: EntitlementChange) -> Outgoing:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": str(change.id),
        "ce_type": change.type,
        "ce_source": CE_SOURCE,
        "ce_time": change.occurred_at.isoformat().replace("+00:00", "Z"),
        "ce_subject": change.customer_id,
        "content-type": "application/json",
    }
    return Outgoing(
        topic=ENTITLEMENT_CHANGES,
        key=change.customer_id,
        value=change.model_dump_json().encode(),
        headers=headers,
    )
