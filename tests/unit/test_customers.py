"""The customer → user rules both workers share (workers/customers.py), and that both
use them."""

from __future__ import annotations

from datetime import timedelta

from contracts import Customer, CustomerEvent, event_id_for
from tests.invoice_support import at, checkout_event, source
from workers import customers
from workers.entitlement import rules as entitlement_rules
from workers.invoice import rules as invoice_rules

T = at("2026-02-01T10:00:00")


def customer_event(kind: str, *, metadata: dict[str, str], deleted: bool = False,
                   seconds: int = 0, event_id: str = "evt_c") -> CustomerEvent:  # fmt: skip
    return CustomerEvent.model_validate(
        {
            "id": event_id_for(event_id),
            "type": kind,
            "occurred_at": T + timedelta(seconds=seconds),
            "source": source(event_id),
            "customer_id": "cus_1",
            "customer": Customer(
                id="cus_1",
                email=None,
                name=None,
                user_id=metadata.get("user_id"),
                metadata=metadata,
                deleted=deleted,
            ),
        }
    )


def test_metadata_wins_over_checkout() -> None:
    assert customers.user_of("user_m", "user_c") == ("user_m", "metadata")
    assert customers.user_of(None, "user_c") == ("user_c", "checkout")
    assert customers.user_of("", "user_c") == ("user_c", "checkout")
    assert customers.user_of(None, None) == (None, None)


def test_a_deleted_stub_says_nothing_but_a_full_deleted_customer_does() -> None:
    stub = customer_event("customer.deleted", metadata={}, deleted=True)
    full = customer_event("customer.deleted", metadata={"user_id": "u"}, deleted=True)
    assert not customers.says_who(stub.customer)
    assert customers.says_who(full.customer)
    assert customers.says_who(customer_event("customer.updated", metadata={}).customer)


def test_marks_order_by_time_then_precedence_then_event_id() -> None:
    created = customers.event_mark(customer_event("customer.created", metadata={}))
    deleted = customers.event_mark(customer_event("customer.deleted", metadata={}))
    later = customers.event_mark(customer_event("customer.created", metadata={}, seconds=1))
    assert created < deleted < later
    assert customers.newer(created, None) and not customers.newer(created, created)
    checkout = customers.event_mark(checkout_event("cus_1", "u", occurred_at=T))
    assert checkout[1] == customers.CHECKOUT_RANK == 0


def test_a_checkout_maps_its_customer_to_its_reference() -> None:
    assert customers.checkout_user(checkout_event("cus_1", "user_1", occurred_at=T)) == (
        "cus_1",
        "user_1",
    )
    guest = checkout_event("cus_1", "user_1", occurred_at=T).model_copy(
        update={"customer_id": None}
    )
    assert customers.checkout_user(guest) is None
    unnamed = checkout_event("cus_1", "", occurred_at=T)
    assert customers.checkout_user(unnamed) is None


def test_both_workers_rank_subscriptions_and_customers_by_the_shared_tables() -> None:
    shared = {**customers.SUBSCRIPTION_EVENT_RANK, **customers.CUSTOMER_EVENT_RANK}
    for ranks in (entitlement_rules.EVENT_RANK, invoice_rules.EVENT_RANK):
        assert {kind: ranks[kind] for kind in shared} == shared
