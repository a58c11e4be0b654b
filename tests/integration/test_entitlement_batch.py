"""The set-based batch path, as a property: any split into batches of any interleaving
(with duplicates) of two customers' histories stores the same state and emits the same
changes, in the same order, as applying the events one at a time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts
from tests.entitlement_support import make_catalog
from tests.integration.test_entitlement_order import HISTORY_LENGTH, NOW, final_state, history
from workers.entitlement import store
from workers.entitlement.handler import EntitlementHandler
from workers.entitlement.rules import Effective
from workers.entitlement.worker import NAME as ENTITLEMENT
from workers.runtime.processing import Outcome, apply_events, apply_one
from workers.runtime.spec import Outgoing, WorkerSpec

pytestmark = pytest.mark.integration

Result = tuple[list[Outcome], list[Outgoing], list[dict[str, Any]]]


async def run(
    conn: asyncpg.Connection,
    spec: WorkerSpec,
    events: list[contracts.BillingEvent],
    batches: list[list[contracts.BillingEvent]] | None,
    customers: list[tuple[str, str]],
) -> Result:
    """Outcomes, Outgoing and final states, in a transaction that is rolled back (so both
    runs can use the same ids)."""
    outcomes: list[Outcome] = []
    outgoing: list[Outgoing] = []
    transaction = conn.transaction()
    await transaction.start()
    try:
        if batches is None:
            for event in events:
                out = await apply_one(conn, spec, event)
                outcomes.append("duplicate" if out is None else "applied")
                outgoing += out or []
        else:
            for batch in batches:
                batch_outcomes, batch_out = await apply_events(conn, spec, batch)
                outcomes += batch_outcomes
                outgoing += batch_out
        states = [await final_state(conn, customer, token) for customer, token in customers]
    finally:
        await transaction.rollback()
    return outcomes, outgoing, states


async def compare(database_url: str, order: list[int], cuts: list[int], length: int) -> None:
    handler = EntitlementHandler(
        make_catalog(), past_due_grace=timedelta(days=3), clock=lambda: NOW
    )
    customers = [(f"cus_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex[:12]) for _ in range(2)]
    pool = [event for customer, token in customers for event in history(customer, token)[:length]]
    events = [pool[n] for n in order]
    bounds = [0, *sorted(cuts), len(events)]
    batches = [events[a:b] for a, b in pairwise(bounds) if b > a]
    one_by_one = WorkerSpec.single(ENTITLEMENT, handler.handle)
    batched = WorkerSpec.single(ENTITLEMENT, handler.handle, handle_batch=handler.handle_batch)
    conn = await asyncpg.connect(database_url)
    try:
        expected = await run(conn, one_by_one, events, None, customers)
        actual = await run(conn, batched, events, batches, customers)
    finally:
        await conn.close()
    assert actual == expected


@st.composite
def batched_interleavings(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    length = draw(st.integers(min_value=1, max_value=HISTORY_LENGTH))
    order = list(draw(st.permutations(range(2 * length))))
    for event in draw(st.lists(st.integers(0, 2 * length - 1), max_size=6)):
        order.insert(draw(st.integers(0, len(order))), event)
    cuts = draw(st.lists(st.integers(0, len(order)), max_size=4))
    return order, cuts, length


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=batched_interleavings())
def test_batches_match_one_event_at_a_time(
    database_url: str, case: tuple[list[int], list[int], int]
) -> None:
    order, cuts, length = case
    asyncio.run(compare(database_url, order, cuts, length))


async def test_saved_sources_keep_any_characters(database_url: str) -> None:
    """Each row's sources travel as a text[] literal: quoting must survive any id."""
    customer = f"cus_{uuid.uuid4().hex[:12]}"
    value = Effective(7, NOW, ('a"b', "c\\d", "{e,f}", "NULL", " g ", ""))
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            states = await store.load(conn, [customer])
            states[customer].put_entitlement("feature", value, NOW)
            await store.save(conn, states.values())
        assert (await store.load(conn, [customer]))[customer].entitlements == {"feature": value}
    finally:
        await conn.close()
