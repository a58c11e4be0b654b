"""Helpers for the entitlement worker's tests: a test catalog, event builders, and
``apply``, which runs a handler through the runtime's per-event path."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import yaml

import contracts
from contracts import (
    Cancellation,
    Customer,
    CustomerEvent,
    EventSource,
    PauseCollection,
    Payment,
    PaymentEvent,
    Subscription,
    SubscriptionEvent,
    SubscriptionItem,
)
from workers.entitlement.catalog import Catalog, parse_catalog
from workers.entitlement.worker import NAME as ENTITLEMENT
from workers.runtime.processing import apply_one
from workers.runtime.spec import Handler, Outgoing, WorkerSpec

EventT = TypeVar("EventT", bound=contracts.events.Envelope)

# Names the price/plan/product ids of tests/fixtures/stripe, plus made-up ones.
TEST_CATALOG_YAML = """
products:
  drf_pro:
    products: [prod_KxfXRXOd7dnLbz]
    features: {sso: true, api_calls: 1000}
  legacy_plan:
    prices: [pl_00000000000000, 2bf80c62-01d6-403d-85d7-d54d9039d140, kx0AFo_00000000000000]
    features: {reports: true}
  rubymock_seats:
    prices: [price_000000000000000000000000]
    features: {seats: {limit: 1, per_seat: true}}
  syncengine_base:
    prices: [price_1IDQm5JDPojXS6LNM31hxKzp]
    features: {sso: true, api_calls: 500}
  pro:
    lookup_keys: [pro_monthly]
    features: {sso: true, api_calls: 1000, storage_gb: {limit: 10, per_seat: true}}
  team:
    prices: [price_team]
    features: {sso: true, api_calls: 5000, audit_log: true}
  addon_calls:
    lookup_keys: [addon_calls]
    addon_for: [pro, syncengine_base, drf_pro]
    features: {api_calls: 250, priority_support: true}
  lifetime_deal:
    lookup_keys: [lifetime_deal]
    features: {export: true, projects: 10}
  projects_pack:
    lookup_keys: [projects_pack]
    addon_for: [lifetime_deal, pro]
    one_off: true
    features: {projects: 5}
  calls_pass:
    lookup_keys: [calls_pass]
    addon_for: [pro]
    one_off: true
    duration_days: 10
    features: {api_calls: 300}
  pass_30d:
    products: [prod_pass]
    duration_days: 30
    features: {export: true, api_calls: 100}
"""


def make_catalog() -> Catalog:
    return parse_catalog(yaml.safe_load(TEST_CATALOG_YAML), origin="test catalog")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def item(
    price_id: str | None = None,
    *,
    lookup_key: str | None = None,
    product_id: str | None = None,
    quantity: int = 1,
    product_metadata: dict[str, str] | None = None,
) -> SubscriptionItem:
    price_id = price_id or f"price_{lookup_key}"
    return SubscriptionItem(
        id=f"si_{price_id}",
        price_id=price_id,
        product_id=product_id,
        lookup_key=lookup_key,
        quantity=quantity,
        current_period_start=None,
        current_period_end=None,
        product_metadata=product_metadata or {},
    )


def subscription(
    items: Sequence[SubscriptionItem],
    *,
    id: str = "sub_test",
    status: str = "active",
    period_end: datetime | None = None,
    trial_end: datetime | None = None,
    cancel_at_period_end: bool = False,
    canceled_at: datetime | None = None,
    paused: bool = False,
) -> Subscription:
    cancellation: Cancellation | None = None
    if status == "canceled" or canceled_at is not None:
        cancellation = Cancellation(mode="immediately", effective_at=canceled_at, reason=None)
    elif cancel_at_period_end:
        cancellation = Cancellation(mode="at_period_end", effective_at=period_end, reason=None)
    return Subscription(
        id=id,
        status=status,
        items=list(items),
        current_period_start=None,
        current_period_end=period_end,
        cancel_at_period_end=cancel_at_period_end,
        cancellation=cancellation,
        trial_start=None,
        trial_end=trial_end,
        pause_collection=PauseCollection(behavior="void", resumes_at=None) if paused else None,
        metadata={},
        changed_fields=[],
    )


def source(event_id: str, stripe_type: str = "test") -> EventSource:
    return EventSource(
        stripe_event_id=event_id,
        stripe_event_type=stripe_type,
        api_version="2025-11-17.clover",
        livemode=False,
        account=None,
    )


def subscription_event(
    event_type: contracts.events.SubscriptionEventType,
    sub: Subscription,
    *,
    customer_id: str,
    occurred_at: datetime,
    event_id: str | None = None,
) -> SubscriptionEvent:
    stripe_id = event_id or f"evt_{uuid.uuid4().hex}"
    return SubscriptionEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id),
        customer_id=customer_id,
        subscription=sub,
    )


def customer_event(
    customer_id: str,
    user_id: str | None,
    *,
    occurred_at: datetime,
    event_type: contracts.events.CustomerEventType = "customer.updated",
    event_id: str | None = None,
) -> CustomerEvent:
    stripe_id = event_id or f"evt_{uuid.uuid4().hex}"
    return CustomerEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id),
        customer_id=customer_id,
        customer=Customer(
            id=customer_id,
            email=None,
            name=None,
            user_id=user_id,
            metadata={"user_id": user_id} if user_id else {},
            deleted=event_type == "customer.deleted",
        ),
    )


def payment(
    intent: str, *, amount: int = 1000, refunded: int = 0, metadata: dict[str, str] | None = None
) -> Payment:
    """A succeeded payment of ``intent`` without an invoice."""
    return Payment(
        id=intent,
        payment_intent_id=intent,
        charge_id=f"ch_{intent}",
        invoice_id=None,
        amount=amount,
        amount_refunded=refunded,
        currency="usd",
        status="succeeded",
        failure_code=None,
        failure_message=None,
        receipt_url=None,
        description=None,
        metadata=metadata or {},
    )


def payment_event(
    event_type: contracts.events.PaymentEventType,
    customer_id: str,
    intent: str,
    *,
    occurred_at: datetime,
    amount: int = 1000,
    refunded: int = 0,
    metadata: dict[str, str] | None = None,
    event_id: str | None = None,
) -> PaymentEvent:
    """A payment of ``intent`` without an invoice (a one-off when ``metadata`` names one)."""
    stripe_id = event_id or f"evt_{uuid.uuid4().hex}"
    return PaymentEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id),
        customer_id=customer_id,
        payment=payment(intent, amount=amount, refunded=refunded, metadata=metadata),
    )


def model_with(event: EventT, **changes: Any) -> EventT:
    """``event`` with top-level fields replaced (validated again)."""
    return type(event).model_validate({**event.model_dump(), **changes})


async def apply(
    conn: asyncpg.Connection, handle: Handler, event: contracts.BillingEvent
) -> list[Outgoing] | None:
    """What the runtime does for one event, through its own code: in one transaction, the
    idempotency row, then the handler only when the row is new. Returns None for a
    duplicate. The result is returned, not written to the outbox (which the relay of any
    worker a later test runs would publish)."""
    spec = WorkerSpec.single(ENTITLEMENT, handle)
    async with conn.transaction():
        outgoing = await apply_one(conn, spec, event)
    return None if outgoing is None else list(outgoing)


async def entitlement_rows(
    conn: asyncpg.Connection, customer_id: str
) -> dict[str, tuple[int | None, datetime | None, list[str]]]:
    rows = await conn.fetch(
        'SELECT feature, "limit", expires_at, sources FROM entitlements WHERE customer_id = $1',
        customer_id,
    )
    return {r["feature"]: (r["limit"], r["expires_at"], list(r["sources"])) for r in rows}


def changes_of(out: Sequence[Outgoing]) -> list[contracts.EntitlementChange]:
    return [contracts.parse_entitlement_change(o.value) for o in out]
