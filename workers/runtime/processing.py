"""Applying events: the idempotency row, the handler and the outbox, in one transaction.

``apply`` takes several records and applies them all in one transaction, in the order
given (per partition, offset order), or none of them: one statement claims the
idempotency rows of all, then the new events go to the handler (the batch handler if the
worker has one), their Outgoing to the outbox and their Delivery values to ``deliveries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import asyncpg
from aiokafka import ConsumerRecord

from billing_fleet.db import bounded_transaction
from contracts import BILLING_EVENT_TYPES, BillingEvent, parse_billing_event
from contracts.labels import bounded_label
from workers.runtime.deliveries.model import Delivery
from workers.runtime.deliveries.store import write_deliveries
from workers.runtime.outbox import write_outbox
from workers.runtime.spec import Effect, Outgoing, Poison, WorkerSpec

Outcome = Literal["applied", "duplicate", "dead_lettered"]

_CLAIM = (
    "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::text[])"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


class Handled(NamedTuple):
    record: ConsumerRecord[bytes, bytes]
    stripe_event_id: str
    type: str
    outcome: Outcome


def event_type(record: ConsumerRecord[bytes, bytes]) -> str:
    """The CloudEvents type header as a metric label, for messages that do not parse: a
    contract event type, ``other`` (anything a producer made up) or ``unknown`` (none)."""
    for name, value in record.headers:
        if name == "ce_type":
            return bounded_label(value.decode(errors="replace"), BILLING_EVENT_TYPES)
    return "unknown"


async def apply(
    pool: asyncpg.Pool,
    spec: WorkerSpec,
    records: Sequence[ConsumerRecord[bytes, bytes]],
    timeout: float,
) -> tuple[list[Handled], bool]:
    """Apply ``records`` in one transaction, within ``timeout``; returns what happened to
    each and whether the outbox or the deliveries got rows (the relay and the dispatcher
    are woken then). Raises (and applies nothing) if any record fails; past ``timeout``
    that is a TimeoutError, an outage: the batch is retried."""
    events = [parse_billing_event(record.value or b"") for record in records]
    async with bounded_transaction(pool, timeout) as conn:
        outcomes, outgoing, delivered = await _apply_events(conn, spec, events)
        await write_outbox(conn, outgoing)
    handled = [
        Handled(record, event.source.stripe_event_id, event.type, outcome)
        for record, event, outcome in zip(records, events, outcomes, strict=True)
    ]
    return handled, bool(outgoing) or delivered > 0


async def apply_events(
    conn: asyncpg.Connection, spec: WorkerSpec, events: Sequence[BillingEvent]
) -> tuple[list[Outcome], list[Outgoing]]:
    """In the open transaction: claim all idempotency rows, hand the new events to the
    handler and write their deliveries; each event's outcome and the Outgoing (not yet
    written to the outbox)."""
    outcomes, outgoing, _ = await _apply_events(conn, spec, events)
    return outcomes, outgoing


async def _apply_events(
    conn: asyncpg.Connection, spec: WorkerSpec, events: Sequence[BillingEvent]
) -> tuple[list[Outcome], list[Outgoing], int]:
    new = await claim(conn, spec, events)
    outcomes: list[Outcome] = []
    fresh: list[BillingEvent] = []
    for event in events:
        stripe_id = event.source.stripe_event_id
        # A repeat within the batch is a duplicate of its first occurrence.
        outcomes.append("applied" if stripe_id in new else "duplicate")
        if stripe_id in new:
            fresh.append(event)
            new.discard(stripe_id)
    outgoing, delivered = await write_effects(conn, spec, await handle(conn, spec, fresh))
    return outcomes, outgoing, delivered


async def apply_one(
    conn: asyncpg.Connection, spec: WorkerSpec, event: BillingEvent
) -> Sequence[Outgoing] | None:
    """The event's Outgoing (its deliveries written), or None if this consumer processed
    it before."""
    if not await claim(conn, spec, [event]):
        return None
    outgoing, _ = await write_effects(conn, spec, await handle(conn, spec, [event]))
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


async def claim(
    conn: asyncpg.Connection, spec: WorkerSpec, events: Sequence[BillingEvent]
) -> set[str]:
    """Insert the idempotency rows of ``events``; the Stripe event ids that were new."""
    ids = list(dict.fromkeys(event.source.stripe_event_id for event in events))
    return {row["event_id"] for row in await conn.fetch(_CLAIM, spec.name, ids)}


async def handle(
    conn: asyncpg.Connection, spec: WorkerSpec, events: Sequence[BillingEvent]
) -> list[Effect]:
    """The effects of ``events``, applied in order by the worker's handler."""
    if not events:
        return []
    if spec.handle_batch is not None:
        return list(await spec.handle_batch(conn, events))
    effects: list[Effect] = []
    for event in events:
        effects += await spec.handle(conn, event)
    return effects
