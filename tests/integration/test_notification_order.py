"""Exactly-once notices, as a property on real PostgreSQL: shuffles, duplicates and
replays of a history give the same deliveries (every mail's destination, key and bytes,
every webhook), the same skips and the same directory as one in-order pass.

A history has a directory part (customer.* events, checkouts) and a notices part
(subscription fixtures as the gateway normalizes them, receipts and failed payments on
invoices.v1, entitlement changes), for several customers: one known from its customer
events (a created and a newer updated with another address: newest wins), one known only
from a checkout's address, one with no address anywhere (its notices are skipped), and a
guest receipt without a customer. Each part arrives in any order, in batches of any size
through the runtime's batch path, with duplicates (the idempotency row) and replays (the
handler again after ``processed_events`` was cleared), and directory events repeated
among the notices; the directory part comes first, since a notice is judged against what
the directory knows when it arrives (a notice whose customer's address arrives later is
skipped: the one order dependence, by design).

Each run is a transaction rolled back afterwards, so every example reuses one database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import BillingEvent, EntitlementChange, LedgerEvent
from tests.notification_support import (
    NOW,
    apply,
    customer_event,
    endpoints_of,
    entitlement_change,
    fixture_event,
    ledger_invoice_event,
    notifier,
    receipt_issued,
    replay,
    subscription_of,
    topic_of,
)
from workers.notification.notices import NOTICES
from workers.runtime.processing import apply_events
from workers.runtime.spec import WorkerSpec

Event = BillingEvent | LedgerEvent | EntitlementChange
ENDPOINTS = {"crm": ["receipt.*", "invoice.payment_failed"], "audit": []}
SUBSCRIPTION_FIXTURES = (
    "customer.subscription.trial_will_end__nijikokun__1",
    "customer.subscription.updated__drfstripe__1",
    "customer.subscription.deleted__rubymock__1",
)


def history(customers: int) -> tuple[list[Event], list[Event]]:
    """(directory events, notice events) of ``customers`` customers per kind."""
    directory: list[Event] = []
    notices: list[Event] = []
    serial = iter(range(10_000))

    def eid() -> str:
        return f"evt_p{next(serial):04d}"

    for c in range(customers):
        known, checkout_only, unknown = f"cus_pk{c}", f"cus_pc{c}", f"cus_pu{c}"
        directory += [
            customer_event(known, email=f"old{c}@example.test", name="Old", occurred_at=NOW,
                           event_type="customer.created", event_id=eid()),
            customer_event(known, email=f"new{c}@example.test", name=f"Known {c}",
                           occurred_at=NOW + timedelta(minutes=5), event_id=eid(),
                           metadata={"preferred_locales": "de" if c % 2 else "en"}),
            fixture_event("checkout.session.completed__rubymock__1", checkout_only,
                          event_id=eid(), customer_email=f"co{c}@example.test"),
        ]  # fmt: skip
        for customer in (known, checkout_only, unknown):
            notices += [fixture_event(f, customer, event_id=eid()) for f in SUBSCRIPTION_FIXTURES]
            receipt_email = f"co{c}@example.test" if customer == checkout_only else None
            notices += [
                receipt_issued(f"R-{customer}", customer_id=customer, email=receipt_email,
                               amount=1500, currency="jpy", cause=eid()),
                ledger_invoice_event("invoice.payment_failed", f"in_{customer}",
                                     customer_id=customer, email=None, cause=eid(),
                                     next_attempt=NOW + timedelta(days=3)),
                ledger_invoice_event("invoice.paid", f"in_{customer}", customer_id=customer,
                                     email=None, cause=eid()),
                entitlement_change("entitlement.granted", customer, "sso", cause=eid()),
                entitlement_change("entitlement.revoked", customer, "sso", cause=eid()),
            ]  # fmt: skip
    notices.append(receipt_issued("R-guest", customer_id=None, email="guest@example.test",
                                  cause=eid()))  # fmt: skip
    return directory, notices


Arrival = tuple[list[Event], list[int], set[int]]
"""(events in arrival order, batch sizes, positions replayed after their batch)."""


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[Event], Arrival]:
    directory, notices = history(draw(st.integers(1, 2)))
    first = list(draw(st.permutations(directory)))
    then = list(draw(st.permutations(notices)))
    for event in draw(st.lists(st.sampled_from(directory), max_size=3)):
        first.insert(draw(st.integers(0, len(first))), event)
    for event in draw(st.lists(st.sampled_from(directory + notices), max_size=6)):
        then.insert(draw(st.integers(0, len(then))), event)
    order = first + then
    batches = draw(st.lists(st.integers(1, 6), min_size=len(order), max_size=len(order)))
    replays = set(draw(st.lists(st.integers(0, len(order) - 1), max_size=5)))
    return directory + notices, (order, batches, replays)


def spec() -> WorkerSpec:
    return notifier(endpoints=endpoints_of(ENDPOINTS), notification_enabled=list(NOTICES)).spec


Outcome = tuple[set[tuple[Any, ...]], set[tuple[Any, ...]], list[dict[str, Any]]]


async def outcome(conn: asyncpg.Connection) -> Outcome:
    sent = await conn.fetch(
        "SELECT channel, destination, idempotency_key, payload, headers::text, metadata::text"
        " FROM deliveries WHERE worker = 'notification'"
    )
    skipped = await conn.fetch(
        "SELECT notice, event_id, topic, recipient, reason FROM notification_skips"
    )
    contacts = await conn.fetch("SELECT * FROM notification_contacts ORDER BY customer_id")
    return (
        {tuple(row) for row in sent},
        {tuple(row) for row in skipped},
        [{k: v for k, v in dict(row).items() if k != "updated_at"} for row in contacts],
    )


async def run_in_order(conn: asyncpg.Connection, events: Sequence[Event]) -> Outcome:
    notify = spec()
    transaction = conn.transaction()
    await transaction.start()
    try:
        for event in events:
            assert await apply(conn, notify, event)
        return await outcome(conn)
    finally:
        await transaction.rollback()


async def run_arrival(conn: asyncpg.Connection, arrival: Arrival) -> Outcome:
    """The events in batches of one topic each (the batch handler), then the replays."""
    order, sizes, replays = arrival
    notify = spec()
    transaction = conn.transaction()
    await transaction.start()
    try:
        position, size = 0, iter(sizes)
        while position < len(order):
            topic = topic_of(order[position])
            batch = []
            for event in order[position : position + next(size)]:
                if topic_of(event) != topic:
                    break
                batch.append(event)
            async with conn.transaction():
                await apply_events(conn, notify, batch, subscription_of(notify, topic))
            for replayed in range(position, position + len(batch)):
                if replayed in replays:
                    await replay(conn, notify, order[replayed])
            position += len(batch)
        return await outcome(conn)
    finally:
        await transaction.rollback()


async def compare(url: str, events: list[Event], arrival: Arrival) -> None:
    conn = await asyncpg.connect(url)
    try:
        in_order = await run_in_order(conn, events)
        shuffled = await run_arrival(conn, arrival)
    finally:
        await conn.close()
    assert shuffled[0] == in_order[0]
    assert shuffled[1] == in_order[1]
    assert shuffled[2] == in_order[2]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=arrivals())
def test_any_arrival_gives_the_in_order_deliveries_skips_and_directory(
    ledger_url: str, case: tuple[list[Event], Arrival]
) -> None:
    asyncio.run(compare(ledger_url, *case))


def test_the_history_reaches_every_kind_of_outcome(ledger_url: str) -> None:
    """The property's history mails every notice, announces webhooks and skips (so the
    comparison covers them all)."""
    directory, notices = history(1)

    async def check() -> Outcome:
        conn = await asyncpg.connect(ledger_url)
        try:
            return await run_in_order(conn, directory + notices)
        finally:
            await conn.close()

    sent, skipped, contacts = asyncio.run(check())
    mails = [row for row in sent if row[0] == "email"]
    notices_mailed = {row[2].split(":")[0] for row in mails}
    assert notices_mailed == set(NOTICES)
    assert {row[1] for row in mails} == {
        "new0@example.test",
        "co0@example.test",
        "guest@example.test",
    }
    assert {row[1] for row in sent if row[0] == "webhook"} == {
        "http://127.0.0.1:9/crm",
        "http://127.0.0.1:9/audit",
    }
    assert {(row[0], row[3], row[4]) for row in skipped} == {
        (kind, "cus_pu0", "no_email") for kind in NOTICES
    }
    assert [(c["customer_id"], c["email"], c["fallback_email"]) for c in contacts] == [
        ("cus_pc0", None, "co0@example.test"),
        ("cus_pk0", "new0@example.test", None),
    ]
