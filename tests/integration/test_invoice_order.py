"""Order tolerance of the ledger, as a property on real PostgreSQL: any shuffle of a
history (several customers, invoices, payments, refunds, disputes, a subscription, a
guest payment), with duplicates (the runtime's idempotency row) and replays (the handler
applied again, as after ``processed_events`` was cleared), ends in the same ledger as one
in-order pass: every ledger table but ``updated_at``, and the receipts as the set of
(payment, account, year, amount, currency), numbered 1..N per sequence without gaps
(which payment gets which number follows arrival order). A receipt's ``paid_at`` is its
succeeded charge's creation whichever event came first when every succeeded event carries
the charge; when the intent's names it by id only, the intent's event time if that came
first (both are allowed, and the charge's creation differs from the intent's).

Each run is a transaction rolled back afterwards, so every example reuses one database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import (
    BillingEvent,
    Customer,
    CustomerEvent,
    PaymentEvent,
    SubscriptionEvent,
    event_id_for,
)
from contracts import Subscription as ContractSubscription
from contracts.events import SubscriptionEventType
from tests.entitlement_support import item, subscription
from tests.invoice_support import (
    apply,
    at,
    checkout_event,
    dispute,
    dispute_event,
    invoice,
    invoice_event,
    invoice_payment_event,
    invoice_spec,
    ledger_tables,
    payment,
    payment_event,
    refund,
    refund_event,
    source,
)
from workers.runtime.processing import handle

T0 = at("2026-02-01T10:00:00")
CONNECT = "acct_1Order"

Outcome = str  # how a customer's invoice ends (see ``histories``)


class History:
    """Events in Stripe's order; times never go back, and a step may keep the same second
    (ties break by precedence, then id). Ids are ``evt_o<nnn>``: the same length, so the
    tie-break is the order of creation."""

    def __init__(self) -> None:
        self.events: list[BillingEvent] = []
        self.at = T0
        self.paid_at: dict[str, set[datetime]] = {}
        """Payment id -> the receipt dates its events allow (one, or one per first event)."""

    def step(self, seconds: int) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at

    def next_id(self) -> str:
        return f"evt_o{len(self.events):03d}"

    def add(self, event: BillingEvent) -> None:
        self.events.append(event)


def _customer(h: History, customer: str, second: int) -> None:
    stripe_id = h.next_id()
    h.add(
        CustomerEvent(
            id=event_id_for(stripe_id), type="customer.created", occurred_at=h.step(second),
            source=source(stripe_id), customer_id=customer,
            customer=Customer(id=customer, email=f"{customer}@example.test", name=customer,
                              user_id=f"user_{customer}", metadata={"user_id": f"user_{customer}"},
                              deleted=False),
        )
    )  # fmt: skip


def _invoice_life(
    h: History,
    steps: Sequence[int],
    customer: str,
    key: str,
    outcome: Outcome,
    *,
    account: str | None,
    refunded: bool,
    disputed: bool,
    listed: bool = True,
    expanded: bool = False,
    clover: bool = False,
) -> None:
    """One invoice: drafted, finalized, then paid (maybe after a failed attempt), failed,
    or voided; a paid one may be refunded in part (the charge.refunded ``listed`` the
    refund, or not) and disputed. The intent is created before its charges; its succeeded
    event carries the charge (``expanded``) or names it by id only. The charge's events
    (``of_charge``) do not know the intent's creation. On ``clover`` (and basil) neither the
    invoice nor the payment names the other: an ``invoice_payment.paid`` links them."""
    steps_left = iter(steps)

    def t() -> datetime:
        return h.step(next(steps_left, 1))

    inv, pi, ch = f"in_o{key}", f"pi_o{key}", f"ch_o{key}"
    created = at("2026-02-01T09:00:00")
    base: dict[str, Any] = {
        "intent": None if clover else pi, "number": f"INV-{key}", "created_at": created,
    }  # fmt: skip
    invoice_of_charge = None if clover else inv
    common: dict[str, Any] = {"customer_id": customer, "account": account}
    h.add(
        invoice_event(
            "invoice.created",
            invoice(inv, status="draft", created_at=created),
            occurred_at=t(),
            event_id=h.next_id(),
            **common,
        )
    )
    h.add(
        invoice_event(
            "invoice.finalized",
            invoice(inv, status="open", **base),
            occurred_at=t(),
            event_id=h.next_id(),
            **common,
        )
    )
    intent_created = at("2026-02-01T09:30:00")
    charge_created = at("2026-02-01T09:41:00")
    if outcome in ("failed", "failed_then_paid"):
        failed = payment(
            pi, status="requires_payment_method", charge=f"{ch}_declined",
            created_at=intent_created, charge_created_at=at("2026-02-01T09:35:00"),
        )  # fmt: skip
        h.add(
            payment_event("payment.failed", failed, occurred_at=t(), event_id=h.next_id(), **common)
        )
        attempt = invoice(inv, status="open", **base).model_copy(update={"attempt_count": 1})
        h.add(
            invoice_event(
                "invoice.payment_failed", attempt, occurred_at=t(), event_id=h.next_id(), **common
            )
        )
    if outcome == "void":
        h.add(
            invoice_event(
                "invoice.voided",
                invoice(inv, status="void", **base),
                occurred_at=t(),
                event_id=h.next_id(),
                **common,
            )
        )
    if outcome not in ("paid", "failed_then_paid"):
        return
    intent_succeeded = payment(
        pi, charge=ch, card=expanded, created_at=intent_created,
        charge_created_at=charge_created if expanded else None,
    )  # fmt: skip
    succeeded_at = t()
    h.add(
        payment_event(
            "payment.succeeded",
            intent_succeeded,
            occurred_at=succeeded_at,
            event_id=h.next_id(),
            **common,
        )
    )
    h.paid_at[pi] = {charge_created} if expanded else {charge_created, succeeded_at}
    h.add(
        payment_event(
            "payment.succeeded",
            payment(
                pi,
                charge=ch,
                invoice_id=invoice_of_charge,
                of_charge=True,
                charge_created_at=charge_created,
            ),
            occurred_at=t(),
            event_id=h.next_id(),
            **common,
        )
    )
    if clover:
        h.add(
            invoice_payment_event(
                f"inpay_o{key}", inv, intent=pi, occurred_at=t(), event_id=h.next_id(),
                account=account,
            )
        )  # fmt: skip
    h.add(
        invoice_event(
            "invoice.paid",
            invoice(inv, status="paid", **base),
            occurred_at=t(),
            event_id=h.next_id(),
            **common,
        )
    )
    if refunded:
        re = f"re_o{key}"
        h.add(
            refund_event(
                "refund.created",
                refund(re, charge=ch, status="pending"),
                customer_id=None,
                account=account,
                occurred_at=t(),
                event_id=h.next_id(),
            )
        )
        h.add(
            refund_event(
                "refund.updated",
                refund(re, charge=ch),
                customer_id=None,
                account=account,
                occurred_at=t(),
                event_id=h.next_id(),
            )
        )
        charge_refunded = payment(
            pi,
            charge=ch,
            invoice_id=invoice_of_charge,
            refunded=500,
            of_charge=True,
            charge_created_at=charge_created,
            refunds=[refund(re, charge=ch, intent=pi)] if listed else [],
        )
        h.add(
            payment_event(
                "payment.refunded", charge_refunded, occurred_at=t(), event_id=h.next_id(), **common
            )
        )
    if disputed:
        dp = f"dp_o{key}"
        h.add(
            dispute_event(
                "dispute.opened",
                dispute(dp, charge=ch),
                customer_id=None,
                occurred_at=t(),
                event_id=h.next_id(),
            )
        )
        h.add(
            dispute_event(
                "dispute.updated",
                dispute(dp, charge=ch, withdrawn=2000),
                customer_id=None,
                occurred_at=t(),
                event_id=h.next_id(),
            )
        )
        h.add(
            dispute_event(
                "dispute.closed",
                dispute(dp, charge=ch, status="won", reinstated=2000),
                customer_id=customer,
                occurred_at=t(),
                event_id=h.next_id(),
            )
        )


def _subscription(h: History, customer: str, canceled: bool) -> None:
    sub = subscription([item("price_pro")], id=f"sub_o{customer}")
    lives: tuple[tuple[SubscriptionEventType, ContractSubscription], ...] = (
        ("subscription.activated", sub),
        ("subscription.canceled", sub.model_copy(update={"status": "canceled"})),
    )
    for kind, snapshot in lives:
        if kind == "subscription.canceled" and not canceled:
            break
        stripe_id = h.next_id()
        h.add(
            SubscriptionEvent(
                id=event_id_for(stripe_id),
                type=kind,
                occurred_at=h.step(1),
                source=source(stripe_id),
                customer_id=customer,
                subscription=snapshot,
            )
        )


@st.composite
def dated_histories(draw: st.DrawFn) -> History:
    h = History()
    steps = st.lists(st.integers(0, 1), min_size=14, max_size=14)
    for c in range(draw(st.integers(1, 2))):
        customer = f"cus_o{c}"
        _customer(h, customer, draw(st.integers(0, 1)))
        if draw(st.booleans()):
            h.add(checkout_event(customer, f"user_co{c}", occurred_at=h.step(1),
                                 event_id=h.next_id()))  # fmt: skip
        account = CONNECT if draw(st.booleans()) else None
        for i in range(draw(st.integers(1, 2))):
            _invoice_life(
                h,
                draw(steps),
                customer,
                f"{c}{i}",
                draw(st.sampled_from(["paid", "failed_then_paid", "failed", "void"])),
                account=account,
                refunded=draw(st.booleans()),
                disputed=draw(st.booleans()),
                listed=draw(st.booleans()),
                expanded=draw(st.booleans()),
                clover=draw(st.booleans()),
            )
        if draw(st.booleans()):
            _subscription(h, customer, draw(st.booleans()))
    if draw(st.booleans()):  # a guest's payment, no invoice, no customer
        guest = payment("pi_oguest", charge="ch_oguest", created_at=at("2026-02-01T09:45:00"))
        h.add(payment_event("payment.succeeded", guest, customer_id=None, occurred_at=h.step(1),
                            event_id=h.next_id()))  # fmt: skip
    return h


def histories() -> st.SearchStrategy[list[BillingEvent]]:
    """The events of ``dated_histories``, in Stripe's order."""
    return dated_histories().map(lambda h: h.events)


Case = tuple[History, list[BillingEvent], set[int]]


@st.composite
def deliveries(draw: st.DrawFn) -> Case:
    """(history, the order it arrives in with duplicates, positions replayed after it)."""
    history = draw(dated_histories())
    events = history.events
    order = list(draw(st.permutations(events)))
    for event in draw(st.lists(st.sampled_from(events), max_size=5)):
        order.insert(draw(st.integers(0, len(order))), event)
    replays = set(draw(st.lists(st.integers(0, len(order) - 1), max_size=4)))
    return history, order, replays


# -- comparing ledgers -----------------------------------------------------------------------

Ledger = tuple[
    dict[str, list[dict[str, Any]]], list[tuple[Any, ...]], dict[tuple[str, str, int], list[int]]
]


async def ledger_of(conn: asyncpg.Connection) -> Ledger:
    """The tables, the receipts' set and each sequence's numbers."""
    receipts = await conn.fetch(
        "SELECT payment_id, account, prefix, year, amount, currency, sequence, number,"
        " customer_id, paid_at FROM ledger_receipts ORDER BY payment_id"
    )
    sequences: dict[tuple[str, str, int], list[int]] = {}
    for row in receipts:
        sequences.setdefault((row["account"], row["prefix"], row["year"]), []).append(
            row["sequence"]
        )
    counters = await conn.fetch(
        "SELECT account, prefix, year, last_number FROM ledger_receipt_counters"
    )
    for counter in counters:
        key = (counter["account"], counter["prefix"], counter["year"])
        assert sorted(sequences.get(key, [])) == list(range(1, counter["last_number"] + 1)), key
    facts = [
        (r["payment_id"], r["account"], r["year"], r["amount"], r["currency"], r["customer_id"],
         r["paid_at"])
        for r in receipts
    ]  # fmt: skip
    return (
        await ledger_tables(conn),
        facts,
        {key: sorted(numbers) for key, numbers in sorted(sequences.items())},
    )


async def run(
    conn: asyncpg.Connection, events: Sequence[BillingEvent], replays: set[int]
) -> Ledger:
    spec = invoice_spec()
    transaction = conn.transaction()
    await transaction.start()
    try:
        for position, event in enumerate(events):
            await apply(conn, spec, event)
            if position in replays:  # the handler again, past the idempotency row
                async with conn.transaction():
                    await handle(conn, spec.subscriptions[0], [event])
        return await ledger_of(conn)
    finally:
        await transaction.rollback()


def _dated(facts: list[tuple[Any, ...]], allowed: dict[str, set[datetime]]) -> list[Any]:
    """The receipts' facts, ``paid_at`` checked against what the history allows (where it
    allows more than one) and then left out."""
    kept: list[Any] = []
    for fact in facts:
        payment_id, paid_at = fact[0], fact[-1]
        if payment_id in allowed:
            assert paid_at in allowed[payment_id], (payment_id, paid_at, allowed[payment_id])
            kept.append(fact[:-1] if len(allowed[payment_id]) > 1 else fact)
        else:
            kept.append(fact)
    return kept


async def compare(url: str, case: Case) -> None:
    history, order, replays = case
    conn = await asyncpg.connect(url)
    try:
        in_order = await run(conn, history.events, set())
        shuffled = await run(conn, order, replays)
    finally:
        await conn.close()
    assert shuffled[0] == in_order[0]
    assert _dated(shuffled[1], history.paid_at) == _dated(in_order[1], history.paid_at)
    assert {k: len(v) for k, v in shuffled[2].items()} == {
        k: len(v) for k, v in in_order[2].items()
    }


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=deliveries())
def test_any_arrival_order_ends_in_the_in_order_ledger(ledger_url: str, case: Case) -> None:
    asyncio.run(compare(ledger_url, case))


def test_a_full_history_fills_every_ledger_table(ledger_url: str) -> None:
    """The property's history reaches every table (so the comparison covers them all)."""
    h = History()
    _customer(h, "cus_full", 1)
    _invoice_life(h, [], "cus_full", "full", "failed_then_paid", account=CONNECT, refunded=True,
                  disputed=True, clover=True)  # fmt: skip
    _subscription(h, "cus_full", canceled=True)

    async def check() -> Ledger:
        conn = await asyncpg.connect(ledger_url)
        try:
            return await run(conn, h.events, set())
        finally:
            await conn.close()

    tables, receipts, sequences = asyncio.run(check())
    assert all(tables.values()), {name: len(rows) for name, rows in tables.items()}
    [payment_row] = tables["ledger_payments"]
    assert (payment_row["status"], payment_row["amount_refunded"], payment_row["invoice_id"]) == (
        "succeeded", 500, "in_ofull",
    )  # fmt: skip
    assert tables["ledger_disputes"][0]["amount_reinstated"] == 2000
    assert tables["ledger_subscriptions"][0]["status"] == "canceled"
    assert tables["ledger_invoices"][0]["payment_intent_id"] == "pi_ofull"  # by its link
    assert [r[:5] for r in receipts] == [("pi_ofull", CONNECT, 2026, 2000, "eur")]
    assert sequences == {(CONNECT, "R", 2026): [1]}
    # The intent's creation, not its charge's nor an event's; the receipt: when it succeeded.
    assert payment_row["created_at"] == at("2026-02-01T09:30:00")
    assert receipts[0][-1] in h.paid_at["pi_ofull"]


def test_a_receipt_is_dated_by_its_charge_whichever_succeeded_event_comes_first(
    ledger_url: str,
) -> None:
    """Both succeeded events carry the charge (created 11 minutes after the intent): the
    receipt's date and the payment's creation are the same in either order."""
    h = History()
    _customer(h, "cus_dated", 1)
    _invoice_life(h, [], "cus_dated", "dated", "paid", account=None, refunded=False,
                  disputed=False, expanded=True)  # fmt: skip
    payments = [e for e in h.events if isinstance(e, PaymentEvent)]
    others = [e for e in h.events if not isinstance(e, PaymentEvent)]

    async def both() -> list[Ledger]:
        conn = await asyncpg.connect(ledger_url)
        try:
            return [
                await run(conn, [*others, *order], set()) for order in (payments, payments[::-1])
            ]
        finally:
            await conn.close()

    forward, backward = asyncio.run(both())
    assert forward == backward
    [receipt] = forward[1]
    assert receipt[-1] == at("2026-02-01T09:41:00")
    assert forward[0]["ledger_payments"][0]["created_at"] == at("2026-02-01T09:30:00")
