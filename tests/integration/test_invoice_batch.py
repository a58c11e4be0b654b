"""The invoice worker's set-based batch path, as a property: any split into batches of any
arrival order (with duplicates) of the order test's histories stores the same ledger and
the same receipts (numbers included: the same arrival order), writes the same document
deliveries and emits the same ``invoices.v1`` records, in the same order, as applying the
events one at a time."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import BILLING_EVENTS, BillingEvent
from tests.integration.test_invoice_order import History, _customer, _invoice_life, histories
from tests.invoice_support import fixed_clock, invoice_spec, ledger_tables
from workers.invoice.handler import InvoiceHandler
from workers.runtime.processing import Outcome, apply_events, apply_one
from workers.runtime.spec import Outgoing, Subscription, WorkerSpec

Result = tuple[list[Outcome], list[Outgoing], dict[str, Any], list[Any], list[str]]


def one_at_a_time() -> WorkerSpec:
    """The worker without its batch handler: the runtime calls ``handle`` per event."""
    batched = invoice_spec()
    handler = InvoiceHandler(receipt_prefix="R", clock=fixed_clock)
    return WorkerSpec(
        name=batched.name,
        subscriptions=(Subscription(BILLING_EVENTS, handler.handle),),
        emits=batched.emits,
        channels=batched.channels,
    )


async def run(
    conn: asyncpg.Connection,
    spec: WorkerSpec,
    events: list[BillingEvent],
    batches: list[list[BillingEvent]] | None,
) -> Result:
    """What happened, and what is stored, in a transaction rolled back afterwards."""
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
        receipts = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT number, account, prefix, year, sequence, payment_id, customer_id, amount,"
                " currency, paid_at, issued_at FROM ledger_receipts ORDER BY number"
            )
        ]
        counters = await conn.fetch("SELECT * FROM ledger_receipt_counters ORDER BY 1, 2, 3")
        deliveries = await conn.fetch(
            "SELECT channel, destination, idempotency_key, payload FROM deliveries"
            " WHERE worker = $1 ORDER BY id",
            spec.name,
        )
        return (
            outcomes,
            outgoing,
            await ledger_tables(conn),
            [*receipts, *(tuple(c) for c in counters)],
            [f"{d['channel']} {d['destination']} {d['idempotency_key']} {d['payload']!r}"
             for d in deliveries],
        )  # fmt: skip
    finally:
        await transaction.rollback()


@st.composite
def batched_arrivals(draw: st.DrawFn) -> tuple[list[BillingEvent], list[int]]:
    events = draw(histories())
    order = list(draw(st.permutations(events)))
    for event in draw(st.lists(st.sampled_from(events), max_size=5)):
        order.insert(draw(st.integers(0, len(order))), event)
    cuts = draw(st.lists(st.integers(0, len(order)), max_size=4))
    return order, cuts


async def compare(url: str, order: list[BillingEvent], cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(order)]
    batches = [order[a:b] for a, b in pairwise(bounds) if b > a]
    conn = await asyncpg.connect(url)
    try:
        expected = await run(conn, one_at_a_time(), order, None)
        actual = await run(conn, invoice_spec(), order, batches)
    finally:
        await conn.close()
    assert actual[0] == expected[0]  # outcomes
    assert actual[1] == expected[1]  # the same records, in the same order
    assert actual[2] == expected[2]  # the ledger
    assert actual[3] == expected[3]  # receipts and counters
    assert actual[4] == expected[4]  # document deliveries


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=batched_arrivals())
def test_batches_match_one_event_at_a_time(
    ledger_url: str, case: tuple[list[BillingEvent], list[int]]
) -> None:
    order, cuts = case
    asyncio.run(compare(ledger_url, order, cuts))


def test_a_whole_history_in_one_batch_matches_too(ledger_url: str) -> None:
    """The largest batch: every event of a two-customer history, refunds and disputes
    arriving before their payments."""
    h = History()
    for customer, key in (("cus_b0", "b0"), ("cus_b1", "b1")):
        _customer(h, customer, 1)
        _invoice_life(h, [], customer, key, "failed_then_paid", account=None, refunded=True,
                      disputed=True, listed=False)  # fmt: skip
    order = sorted(h.events, key=lambda e: e.type.startswith("payment."))  # payments last
    asyncio.run(compare(ledger_url, order, []))
