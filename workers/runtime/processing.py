"""Applying events: the idempotency row, the handler and the outbox, in one transaction.

``apply`` takes several records of one subscribed topic and applies them all in one
transaction, in the order given (per partition, offset order), or none of them: one
statement claims the idempotency rows of all, then the new events go to the handler (the
batch handler if the subscription has one), their Outgoing to the worker's outbox and
their Delivery values to ``deliveries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import asyncpg
from aiokafka import ConsumerRecord

from billing_fleet.db import bounded_transaction
from contracts import BILLING_EVENT_TYPES
from contracts.labels import bounded_label
from workers.runtime.deliveries.model import Delivery
from workers.runtime.deliveries.store import write_deliveries
from workers.runtime.outbox import write_outbox
from workers.runtime.spec import Effect, Outgoing, Poison, Subscription, WorkerSpec

Outcome = Literal["applied", "duplicate", "dead_lettered"]

_CLAIM = (
    "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::text[])"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


class Handled(NamedTuple):
    record: ConsumerRecord[bytes, bytes]
    event_id: str
    type: str
    outcome: Outcome


def event_type(
    record: ConsumerRecord[bytes, bytes], types: frozenset[str] = BILLING_EVENT_TYPES
) -> str:
    """The CloudEvents type header as a metric label, for messages that do not parse: one
    of the topic's contract ``types``, ``other`` (anything a producer made up) or
    ``unknown`` (none)."""
    for name, value in record.headers:
        if name == "ce_type":
            return bounded_label(value.decode(errors="replace"), types)
    return "unknown"


async def apply(
    pool: asyncpg.Pool,
    spec: WorkerSpec,
    subscription: Subscription[Any],
    records: Sequence[ConsumerRecord[bytes, bytes]],
    timeout: float,
) -> tuple[list[Handled], bool]:
    """Apply ``records`` (of ``subscription``'s topic) in one transaction, within
    ``timeout``; returns what happened to each and whether the outbox or the deliveries got
    rows (the relay and the dispatcher are woken then). Raises (and applies nothing) if any
    record fails; past ``timeout`` that is a TimeoutError, an outage: the batch is retried."""
    parse = subscription.parse
    events = [parse(record.value or b"") for record in records]
    async with bounded_transaction(pool, timeout) as conn:
        outcomes, outgoing, delivered = await _apply_events(conn, spec, events, subscription)
        await write_outbox(conn, spec.name, outgoing)
    id_of, type_of = subscription.event_id, subscription.event_type
    handled = [
        Handled(record, id_of(event), type_of(event), outcome)
        for record, event, outcome in zip(records, events, outcomes, strict=True)
    ]
    return handled, bool(outgoing) or delivered > 0


async def apply_events(
    conn: asyncpg.Connection,
    spec: WorkerSpec,
    events: Sequence[Any],
    subscription: Subscription[Any] | None = None,
) -> tuple[list[Outcome], list[Outgoing]]:
    """In the open transaction: claim all idempotency rows, hand the new events to the
    handler and write their deliveries; each event's outcome and the Outgoing (not yet
    written to the outbox). ``subscription`` defaults to the worker's first."""
    outcomes, outgoing, _ = await _apply_events(conn, spec, events, subscription)
    return outcomes, outgoing


async def _apply_events(
    conn: asyncpg.Connection,
    spec: WorkerSpec,
    events: Sequence[Any],
    subscription: Subscription[Any] | None,
) -> tuple[list[Outcome], list[Outgoing], int]:
    subscription = subscription or spec.subscriptions[0]
    id_of = subscription.event_id
    ids = [id_of(event) for event in events]
    new = await _claim(conn, spec.consumer_key(subscription), ids)
    outcomes: list[Outcome] = []
    fresh: list[Any] = []
    for event, event_id in zip(events, ids, strict=True):
        # A repeat within the batch is a duplicate of its first occurrence.
        outcomes.append("applied" if event_id in new else "duplicate")
        if event_id in new:
            fresh.append(event)
            new.discard(event_id)
    outgoing, delivered = await write_effects(conn, spec, await handle(conn, subscription, fresh))
    return outcomes, outgoing, delivered


async def apply_one(
    conn: asyncpg.Connection,
    spec: WorkerSpec,
    event: Any,
    subscription: Subscription[Any] | None = None,
) -> Sequence[Outgoing] | None:
    """The event's Outgoing (its deliveries written), or None if this consumer processed
    it before."""
    subscription = subscription or spec.subscriptions[0]
    key = spec.consumer_key(subscription)
    if not await _claim(conn, key, [subscription.event_id(event)]):
        return None
    outgoing, _ = await write_effects(conn, spec, await handle(conn, subscription, [event]))
    return outgoing


async def write_effects(
    conn: asyncpg.Connection, spec: WorkerSpec, effects: Sequence[Effect]
) -> tuple[list[Outgoing], int]:
    """Write the Delivery values among ``effects`` (a redelivered key inserts nothing);
    returns the Outgoing, in order, and how many deliveries are new."""
    outgoing: list[Outgoing] = []
    deliveries: list[Delivery] = []
    for effect in effects:
        if isinstance(effect, Delivery):
            if effect.channel not in spec.channels:
                raise Poison(f"worker {spec.name} has no delivery channel {effect.channel!r}")
            deliveries.append(effect)
        else:
            outgoing.append(effect)
    return outgoing, await write_deliveries(conn, spec.name, deliveries)


async def _claim(conn: asyncpg.Connection, consumer: str, ids: Sequence[str]) -> set[str]:
    """Insert the idempotency rows of ``ids``; the ids that were new."""
    unique = list(dict.fromkeys(ids))
    return {row["event_id"] for row in await conn.fetch(_CLAIM, consumer, unique)}


async def handle(
    conn: asyncpg.Connection, subscription: Subscription[Any], events: Sequence[Any]
) -> list[Effect]:
    """The effects of ``events``, applied in order by the subscription's handler."""
    if not events:
        return []
    if subscription.handle_batch is not None:
        return list(await subscription.handle_batch(conn, events))
    effects: list[Effect] = []
    for event in events:
        effects += await subscription.handle(conn, event)
    return effects
