"""The invoice worker's pure rules: ranks, merges that do not depend on the order of two
events, how a change is typed, receipt numbers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from contracts.events import PaymentEventType
from tests.invoice_support import (
    at,
    dispute,
    dispute_event,
    invoice,
    invoice_event,
    payment,
    payment_event,
    refund,
    refund_event,
)
from workers.invoice import rules
from workers.invoice.receipts import receipt_number
from workers.invoice.rows import InvoiceRow, Mark, PaymentRow

T = at("2026-02-01T10:00:00")


def test_status_ranks_move_states_forward_only() -> None:
    invoice_ranks = [
        rules.invoice_status_rank(s)
        for s in (None, "draft", "open", "uncollectible", "paid", "void")
    ]
    assert invoice_ranks == [0, 0, 1, 2, 3, 4]
    assert rules.invoice_status_rank("deleted") == 0  # unknown: the lowest
    payment_statuses = ("requires_action", "processing", "canceled", "failed", "succeeded")
    assert [rules.payment_status_rank(s) for s in payment_statuses] == [0, 0, 1, 1, 2]
    refund_statuses = ("pending", None, "failed", "succeeded")
    assert [rules.refund_status_rank(s) for s in refund_statuses] == [0, 0, 1, 1]
    dispute_statuses = ("needs_response", "won", "lost", "warning_closed")
    assert [rules.dispute_status_rank(s) for s in dispute_statuses] == [0, 1, 1, 1]
    assert rules.subscription_status_rank("incomplete_expired") == 1
    assert rules.subscription_status_rank("past_due") == 0


def test_the_ledger_status_of_a_payment_is_what_its_event_says() -> None:
    assert rules.ledger_payment_status("payment.failed", "requires_payment_method") == "failed"
    assert rules.ledger_payment_status("payment.failed", "canceled") == "canceled"
    assert rules.ledger_payment_status("payment.succeeded", "processing") == "succeeded"
    assert rules.ledger_payment_status("payment.refunded", "succeeded") == "succeeded"


def test_a_higher_status_rank_wins_over_any_time() -> None:
    paid_early = Mark(3, T, 4, "evt_a")
    open_late = Mark(1, T + timedelta(days=3), 1, "evt_b")
    assert paid_early > open_late
    same_second = (Mark(2, T, 1, "evt_z"), Mark(2, T, 2, "evt_a"))
    assert max(same_second).rank == 2  # precedence before the id


# -- merges do not depend on the order of the two events ----------------------------------------

seconds = st.integers(min_value=0, max_value=4)
statuses = st.sampled_from(["draft", "open", "paid", "void", "uncollectible"])


@given(statuses, statuses, seconds, seconds, st.booleans())
def test_two_invoice_events_merge_alike_in_either_order(
    first: str, second: str, a: int, b: int, tie: bool
) -> None:
    one = rules.invoice_row(invoice_event(
        "invoice.finalized", invoice("in_1", status=first, intent="pi_1" if tie else None,
                                     created_at=T + timedelta(seconds=a)),
        customer_id="cus_1", occurred_at=T + timedelta(seconds=a), event_id="evt_1",
    ))  # fmt: skip
    two = rules.invoice_row(invoice_event(
        "invoice.paid", invoice("in_1", status=second, number="INV-1",
                                created_at=T + timedelta(seconds=b)),
        customer_id="cus_1", occurred_at=T + timedelta(seconds=b), event_id="evt_2",
    ))  # fmt: skip
    forward = rules.merge_invoice(rules.merge_invoice(None, one), two)
    backward = rules.merge_invoice(rules.merge_invoice(None, two), one)
    assert forward == backward
    assert forward.mark == max(one.mark, two.mark)
    assert forward.created_at == min(one.created_at, two.created_at)
    assert forward.number == "INV-1" and forward.payment_intent_id == one.payment_intent_id


PAYMENT_KINDS: list[PaymentEventType] = ["payment.succeeded", "payment.failed", "payment.refunded"]
pay_kinds = st.sampled_from(PAYMENT_KINDS)


@given(pay_kinds, pay_kinds, seconds, seconds, st.booleans(), st.booleans(),
       st.integers(0, 2000), st.integers(0, 2000))  # fmt: skip
def test_two_payment_events_merge_alike_in_either_order(
    kind_a: PaymentEventType,
    kind_b: PaymentEventType,
    a: int,
    b: int,
    card_a: bool,
    card_b: bool,
    ref_a: int,
    ref_b: int,
) -> None:
    def row(
        kind: PaymentEventType, at_s: int, card: bool, refunded: int, event_id: str
    ) -> PaymentRow:
        status = "succeeded" if kind != "payment.failed" else "requires_payment_method"
        return rules.payment_row(payment_event(
            kind, payment("pi_1", status=status, charge="ch_1" if card else None, card=card,
                    refunded=refunded, created_at=T + timedelta(seconds=at_s)),
            customer_id="cus_1" if card else None, occurred_at=T + timedelta(seconds=at_s),
            event_id=event_id,
        ))  # fmt: skip

    one = row(kind_a, a, card_a, ref_a, "evt_1")
    two = row(kind_b, b, card_b, ref_b, "evt_2")
    forward = rules.merge_payment(rules.merge_payment(None, one), two)
    backward = rules.merge_payment(rules.merge_payment(None, two), one)
    assert forward == backward
    # Refunded: as the newest event that carried the charge says (an intent's without it
    # says nothing), else the newest snapshot's.
    charged = [r for r in (one, two) if r.charge_mark is not None]
    source = max(charged or [one, two], key=lambda r: r.charge_mark or r.mark)
    assert forward.amount_refunded == source.amount_refunded
    if card_a or card_b:
        assert forward.card_brand == "visa" and forward.customer_id == "cus_1"
        assert forward.charge_id == "ch_1"


attempts = st.lists(
    st.tuples(pay_kinds, seconds, st.sampled_from(["ch_1", "ch_2", None]), st.booleans(),
              st.integers(0, 2000)),
    min_size=1, max_size=4,
)  # fmt: skip


@given(attempts, st.randoms(use_true_random=False))
def test_a_payment_s_charge_fields_come_from_one_event_whatever_the_order(
    events: list[tuple[PaymentEventType, int, str | None, bool, int]], rng: Any
) -> None:
    """Each attempt has its own charge; the charge id, card details and amount refunded
    are the greatest-marked detailed event's (else the greatest that named a charge), the
    same for any order of the events."""
    rows = [
        rules.payment_row(payment_event(
            kind, payment("pi_1", status="succeeded" if kind != "payment.failed" else "failed",
                          charge=charge, card=card and charge is not None, refunded=refunded,
                          created_at=T),
            customer_id="cus_1", occurred_at=T + timedelta(seconds=at_s), event_id=f"evt_{i}",
        ))
        for i, (kind, at_s, charge, card, refunded) in enumerate(events)
    ]  # fmt: skip
    shuffled = list(rows)
    rng.shuffle(shuffled)
    merged = merged_in(rows)
    assert merged == merged_in(shuffled)
    named = [r for r in rows if r.charge_id is not None]
    detailed = [r for r in named if r.card_brand is not None]
    if named:
        expected = max(detailed or named, key=lambda r: r.mark)
        assert (merged.charge_id, merged.card_brand, merged.amount_refunded) == (
            expected.charge_id, expected.card_brand, expected.amount_refunded,
        )  # fmt: skip
    else:
        assert merged.charge_id is None


def merged_in(rows: list[PaymentRow]) -> PaymentRow:
    merged: PaymentRow | None = None
    for row in rows:
        merged = rules.merge_payment(merged, row)
    assert merged is not None
    return merged


@given(seconds, seconds, st.integers(0, 900), st.integers(0, 900))
def test_dispute_funds_only_grow_and_refunds_keep_their_payment(
    a: int, b: int, withdrawn: int, reinstated: int
) -> None:
    opened = rules.dispute_row(dispute_event(
        "dispute.opened", dispute("dp_1", charge="ch_1", withdrawn=withdrawn),
        customer_id=None, occurred_at=T + timedelta(seconds=a), event_id="evt_1",
    ))  # fmt: skip
    closed = rules.dispute_row(dispute_event(
        "dispute.closed", dispute("dp_1", charge="ch_1", status="won", reinstated=reinstated),
        customer_id="cus_1", occurred_at=T + timedelta(seconds=b), event_id="evt_2",
    ))  # fmt: skip
    forward = rules.merge_dispute(rules.merge_dispute(None, opened), closed)
    assert forward == rules.merge_dispute(rules.merge_dispute(None, closed), opened)
    assert (forward.status, forward.amount_withdrawn, forward.amount_reinstated) == (
        "won", withdrawn, reinstated,
    )  # fmt: skip
    assert forward.customer_id == "cus_1"

    created = rules.refund_row(refund("re_1", charge="ch_1", status="pending"), refund_event(
        "refund.created", refund("re_1", charge="ch_1", status="pending"), customer_id=None,
        occurred_at=T + timedelta(seconds=a), event_id="evt_3",
    ))  # fmt: skip
    attached = created._replace(payment_id="pi_1")
    updated = rules.refund_row(refund("re_1", charge="ch_1"), refund_event(
        "refund.updated", refund("re_1", charge="ch_1"), customer_id=None,
        occurred_at=T + timedelta(seconds=b), event_id="evt_4",
    ))  # fmt: skip
    assert rules.merge_refund(attached, updated).payment_id == "pi_1"
    assert rules.merge_refund(attached, updated).status == "succeeded"


# -- typing changes -------------------------------------------------------------------------------


def test_invoice_changes_are_named_by_the_transition() -> None:
    def row(status: str | None) -> InvoiceRow:
        return rules.invoice_row(invoice_event(
            "invoice.finalized", invoice("in_1", status=status), customer_id="cus_1",
            occurred_at=T, event_id="evt_1",
        ))  # fmt: skip

    draft, open_, paid = row("draft"), row("open"), row("paid")
    assert rules.invoice_change(None, draft, "invoice.created", True) == "invoice.created"
    assert rules.invoice_change(None, paid, "invoice.paid", True) == "invoice.paid"
    assert rules.invoice_change(draft, open_, "invoice.finalized", True) == "invoice.finalized"
    assert rules.invoice_change(open_, open_, "invoice.payment_failed", True) == (
        "invoice.payment_failed"
    )
    assert rules.invoice_change(open_, open_, "invoice.payment_failed", False) == "invoice.updated"


def test_payment_changes_name_each_transition() -> None:
    def row(status: str, refunded: int) -> PaymentRow:
        return rules.payment_row(payment_event(
            "payment.refunded" if refunded else "payment.succeeded",
            payment("pi_1", status=status, refunded=refunded), customer_id="cus_1",
            occurred_at=T,
        ))  # fmt: skip

    ok, refunded = row("succeeded", 0), row("succeeded", 300)
    assert rules.payment_changes(None, refunded) == ["payment.succeeded", "payment.refunded"]
    assert rules.payment_changes(ok, refunded) == ["payment.refunded"]
    assert rules.payment_changes(ok, ok._replace(description="x")) == ["payment.updated"]


def test_receipt_numbers_name_the_account_and_test_mode() -> None:
    assert receipt_number("R", "", 2026, 123, livemode=True) == "R-2026-000123"
    assert receipt_number("R", "acct_9", 2026, 7, livemode=True) == "R-acct_9-2026-000007"
    assert receipt_number("INV", "", 2027, 1_234_567, livemode=True) == "INV-2027-1234567"
    assert receipt_number("R", "", 2026, 4, livemode=False) == "R-TEST-2026-000004"
    assert receipt_number("R", "acct_9", 2026, 7, livemode=False) == "R-acct_9-TEST-2026-000007"
