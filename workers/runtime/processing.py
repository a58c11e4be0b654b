"""Applying events: the idempotency row, the handler and the outbox, in one transaction.

``apply`` takes several records and applies them all in one transaction, in the order
given (per partition, offset order), or none of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, cast

import asyncpg
from aiokafka import ConsumerRecord

from contracts import BillingEvent, parse_billing_event
from workers.runtime.outbox import write_outbox
from workers.runtime.spec import Outgoing, WorkerSpec

Outcome = Literal["applied", "duplicate", "dead_lettered"]

_CLAIM = (
    "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)"
    " ON CONFLICT DO NOTHING RETURNING 1"
)


@dataclass(frozen=True)
class Handled:
    record: ConsumerRecord[bytes, bytes]
    stripe_event_id: str
    type: str
    outcome: Outcome


def event_type(record: ConsumerRecord[bytes, bytes]) -> str:
    """The CloudEvents type header, for metrics of messages that do not parse."""
    for name, value in record.headers:
        if name == "ce_type":
            return str(value.decode(errors="replace"))
    return "unknown"


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a transaction, committed when the block ends."""
    async with pool.acquire() as proxy, proxy.transaction():
        # The pool's proxy forwards every Connection method; handlers are typed on those.
        yield cast(asyncpg.Connection, proxy)


async def apply(
    pool: asyncpg.Pool, spec: WorkerSpec, records: Sequence[ConsumerRecord[bytes, bytes]]
) -> tuple[list[Handled], bool]:
    """Apply ``records`` in one transaction; returns what happened to each and whether the
    outbox got rows. Raises (and applies nothing) if any record fails."""
    events = [parse_billing_event(record.value or b"") for record in records]
    handled: list[Handled] = []
    wrote_outbox = False
    async with transaction(pool) as conn:
        for record, event in zip(records, events, strict=True):
            outgoing = await apply_one(conn, spec, event)
            if outgoing is None:
                handled.append(
                    Handled(record, event.source.stripe_event_id, event.type, "duplicate")
                )
                continue
            await write_outbox(conn, outgoing)
            wrote_outbox = wrote_outbox or bool(outgoing)
            handled.append(Handled(record, event.source.stripe_event_id, event.type, "applied"))
    return handled, wrote_outbox


async def apply_one(
    conn: asyncpg.Connection, spec: WorkerSpec, event: BillingEvent
) -> Sequence[Outgoing] | None:
    """The event's Outgoing, or None if this consumer processed it before."""
    if await conn.fetchval(_CLAIM, spec.name, event.source.stripe_event_id) is None:
        return None
    return await spec.handle(conn, event)
