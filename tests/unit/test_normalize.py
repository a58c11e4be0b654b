"""Stripe event → contract event, over the real fixtures in tests/fixtures/stripe.

Where no fixture has a value we need to see carried through (a Connect ``account`` on a
handled type, ``client_reference_id``, ``metadata.user_id``, a basil+ invoice ``parent``),
the test starts from a real fixture and sets that one field, and says so.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts
from api_gateway.normalize import (
    HANDLED_TYPES,
    UnhandledEventType,
    UnmappableEvent,
    normalize,
    partition_key,
)
from tests.stripe_fixtures import FIXTURES


def _fixture_files() -> list[Path]:
    files = sorted(FIXTURES.glob("*.json"))
    if not files:
        # An empty parametrization would only skip; a missing folder must fail the run.
        raise FileNotFoundError(f"no Stripe event fixtures in {FIXTURES}")
    return files


FIXTURE_FILES = _fixture_files()


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def load_object(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "objects" / name).read_text())
    return data


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def subscription_of(name: str) -> contracts.Subscription:
    event = normalize(load(name))
    assert isinstance(event, contracts.SubscriptionEvent)
    return event.subscription


def invoice_of(raw: dict[str, Any]) -> contracts.Invoice:
    event = normalize(raw)
    assert isinstance(event, contracts.InvoiceEvent)
    return event.invoice


def payment_of(name: str) -> contracts.Payment:
    event = normalize(load(name))
    assert isinstance(event, contracts.PaymentEvent)
    return event.payment


# -- every fixture -------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_normalizes_or_is_unhandled(path: Path) -> None:
    raw = json.loads(path.read_text())
    if raw["type"] not in HANDLED_TYPES:
        with pytest.raises(UnhandledEventType):
            normalize(raw)
        return

    event = normalize(raw)

    assert contracts.parse_billing_event(event.model_dump_json()) == event
    assert event.id == contracts.event_id_for(raw["id"])
    assert event.occurred_at == at(raw["created"])
    assert event.source == contracts.EventSource(
        stripe_event_id=raw["id"],
        stripe_event_type=raw["type"],
        api_version=raw["api_version"],
        livemode=raw["livemode"],
        account=raw.get("account"),
    )
    assert partition_key(event)


def test_fixture_set_covers_handled_and_unhandled_types() -> None:
    types = {json.loads(p.read_text())["type"] for p in FIXTURE_FILES}
    assert "invoice.upcoming" in types - HANDLED_TYPES
    assert len(types & HANDLED_TYPES) >= 20


# -- subscriptions -------------------------------------------------------------------------


def test_2014_subscription_without_items_gets_one_item_from_top_level_plan() -> None:
    sub = subscription_of("customer.subscription.trial_will_end__rubymock__2.json")

    assert [(i.id, i.price_id, i.quantity) for i in sub.items] == [
        (None, "kx0AFo_00000000000000", 1)
    ]
    assert sub.current_period_end == at(1423323929)
    assert sub.items[0].current_period_end == at(1423323929)
    assert sub.status == "trialing"
    assert sub.trial_end == at(1422331295)


def test_2015_subscription_plan_quantity_and_period() -> None:
    sub = subscription_of("customer.subscription.created__nijikokun__1.json")

    assert [(i.price_id, i.product_id, i.quantity) for i in sub.items] == [
        ("pl_00000000000000", None, 1)
    ]
    assert sub.current_period_start == at(1444032181)
    assert sub.current_period_end == at(1446710581)
    assert sub.cancellation is None


def test_2018_subscription_prefers_items_over_top_level_plan() -> None:
    # The fixture's top-level plan id differs from its item's; the item is authoritative.
    event = normalize(load("customer.subscription.updated__rubymock__2.json"))
    assert isinstance(event, contracts.SubscriptionEvent)
    sub = event.subscription

    assert [(i.id, i.price_id) for i in sub.items] == [
        ("si_CDqQLQNlZuf1cZ", "2bf80c62-01d6-403d-85d7-d54d9039d140")
    ]
    assert sub.changed_fields == ["plan"]
    assert sub.cancellation is not None and sub.cancellation.mode == "immediately"


def test_2020_items_carry_price_product_and_default_quantity() -> None:
    sub = subscription_of("customer.subscription.created__syncengine__1.json")

    assert [(i.price_id, i.product_id, i.lookup_key, i.quantity) for i in sub.items] == [
        ("price_1IDQm5JDPojXS6LNM31hxKzp", "prod_Ip4vqwv3EJ7Mi0", None, 1),
        # The second item has no quantity in the fixture (as for metered prices).
        ("price_1IDQm5JDPojXS6LNM31hxKzp", "prod_Ip4vqwv3EJ7Mi0", None, 1),
    ]


def test_cancel_at_period_end_is_scheduled_cancellation() -> None:
    event = normalize(load("customer.subscription.updated__drfstripe__1.json"))
    assert isinstance(event, contracts.SubscriptionEvent)
    sub = event.subscription

    assert event.type == "subscription.updated"
    assert sub.cancel_at_period_end is True
    assert sub.cancellation == contracts.Cancellation(
        mode="at_period_end", effective_at=at(1673686617), reason=None
    )
    assert sub.changed_fields == ["cancel_at", "cancel_at_period_end", "canceled_at"]


def test_undone_cancellation_has_none() -> None:
    sub = subscription_of("customer.subscription.updated__drfstripe__2.json")

    assert sub.cancel_at_period_end is False
    assert sub.cancellation is None


def test_deleted_subscription_is_immediate_cancellation() -> None:
    event = normalize(load("customer.subscription.deleted__drfstripe__1.json"))
    assert isinstance(event, contracts.SubscriptionEvent)

    assert event.type == "subscription.canceled"
    assert event.subscription.cancellation == contracts.Cancellation(
        mode="immediately", effective_at=at(1642152635), reason=None
    )


def test_cancellation_reason_and_pause_collection() -> None:
    raw = load("customer.subscription.updated__drfstripe__1.json")
    raw["data"]["object"]["cancellation_details"] = {"reason": "cancellation_requested"}
    raw["data"]["object"]["pause_collection"] = {"behavior": "void", "resumes_at": 1700000000}

    event = normalize(raw)
    assert isinstance(event, contracts.SubscriptionEvent)

    assert event.subscription.cancellation is not None
    assert event.subscription.cancellation.reason == "cancellation_requested"
    assert event.subscription.pause_collection == contracts.PauseCollection(
        behavior="void", resumes_at=at(1700000000)
    )


def test_basil_subscription_takes_period_from_its_item() -> None:
    # Stripe's own sample subscription (2026 shape) has no top-level period.
    obj = load_object("subscription.json")
    raw = load("customer.subscription.updated__drfstripe__1.json")
    raw["api_version"] = "2025-11-17.clover"
    raw["data"] = {"object": obj, "previous_attributes": {"items": {}}}

    event = normalize(raw)
    assert isinstance(event, contracts.SubscriptionEvent)
    sub = event.subscription
    item = obj["items"]["data"][0]

    assert "current_period_end" not in obj
    assert sub.current_period_end == at(item["current_period_end"])
    assert sub.current_period_start == at(item["current_period_start"])
    assert sub.items[0].price_id == item["price"]["id"]
    assert sub.pause_collection == contracts.PauseCollection(
        behavior="mark_uncollectible", resumes_at=None
    )


def test_basil_subscription_period_is_the_item_ending_first() -> None:
    raw = load("customer.subscription.created__syncengine__1.json")
    obj = raw["data"]["object"]
    del obj["current_period_start"], obj["current_period_end"]
    first, second = obj["items"]["data"]
    first.update(current_period_start=100, current_period_end=300)
    second.update(current_period_start=150, current_period_end=200)

    sub = normalize(raw)
    assert isinstance(sub, contracts.SubscriptionEvent)

    assert (sub.subscription.current_period_start, sub.subscription.current_period_end) == (
        at(150),
        at(200),
    )


# -- invoices ------------------------------------------------------------------------------


def test_clover_invoice_reads_subscription_from_parent() -> None:
    # The clover fixtures are one-off invoices (parent: null); put Stripe's sample parent
    # (subscription_details) on a real clover event, which also still has no top-level
    # subscription/charge/payment_intent.
    raw = load("invoice.paid__zulip__1.json")
    raw["data"]["object"]["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": None, "subscription": "sub_1Pgc6rB7WZ01zgkW"},
    }

    inv = invoice_of(raw)

    assert raw["api_version"] == "2025-11-17.clover"
    assert inv.subscription_id == "sub_1Pgc6rB7WZ01zgkW"
    assert (inv.payment_intent_id, inv.charge_id) == (None, None)


def test_stripe_sample_invoice_with_stale_null_subscription_uses_parent() -> None:
    obj = load_object("invoice.json")
    raw = load("invoice.paid__zulip__1.json")
    raw["data"]["object"] = obj

    inv = invoice_of(raw)

    assert obj["subscription"] is None
    assert inv.subscription_id == obj["parent"]["subscription_details"]["subscription"]


def test_clover_invoice_lines_read_pricing_details() -> None:
    inv = invoice_of(load("invoice.paid__zulip__1.json"))

    assert inv.subscription_id is None
    assert inv.status == "paid"
    assert [(ln.price_id, ln.product_id, ln.quantity, ln.amount) for ln in inv.lines] == [
        ("price_NORMALIZED", "prod_NORMALIZED", 6, 48000)
    ]


def test_clover_invoice_payment_from_expanded_payments_list() -> None:
    raw = load("invoice.paid__zulip__1.json")
    raw["data"]["object"]["payments"] = {
        "object": "list",
        "data": [
            {"object": "invoice_payment", "is_default": False, "payment": {"type": "charge"}},
            {
                "object": "invoice_payment",
                "is_default": True,
                "payment": {"type": "payment_intent", "payment_intent": "pi_default"},
            },
        ],
    }

    assert invoice_of(raw).payment_intent_id == "pi_default"


def test_2020_invoice_has_subscription_charge_and_intent() -> None:
    inv = invoice_of(load("invoice.payment_failed__rubymock__1.json"))
    assert (inv.status, inv.attempt_count) == ("open", 1)
    assert (inv.payment_intent_id, inv.charge_id) == (
        "pi_000000000000000000000000",
        "ch_000000000000000000000000",
    )
    assert invoice_of(load("invoice.finalized__syncengine__1.json")).subscription_id == (
        "sub_K4J0aB2bmSyb6b"
    )


def test_2015_invoice_status_derived_from_paid_flag() -> None:
    failed = invoice_of(load("invoice.payment_failed__nijikokun__1.json"))
    paid = invoice_of(load("invoice.payment_succeeded__nijikokun__1.json"))

    assert (failed.status, failed.amount_paid, failed.amount_remaining) == ("open", 0, 212)
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 212, 0)
    assert paid.subscription_id == "sub_00000000000000"
    assert [(ln.price_id, ln.quantity, ln.amount) for ln in paid.lines] == [("1233", 1, 2000)]
    # This old fixture has "charge": 0; a placeholder is not an id.
    assert paid.charge_id is None


def test_invoice_total_and_attempt_count_defaults() -> None:
    raw = load("invoice.created__rubymock__1.json")
    del raw["data"]["object"]["total"], raw["data"]["object"]["attempt_count"]

    inv = invoice_of(raw)

    assert (inv.total, inv.attempt_count) == (inv.amount_due, 0)


def test_payment_succeeded_and_paid_address_the_same_invoice() -> None:
    succeeded = normalize(load("invoice.payment_succeeded__rubymock__1.json"))
    paid = normalize(load("invoice.paid__rubymock__1.json"))

    assert isinstance(succeeded, contracts.InvoiceEvent)
    assert isinstance(paid, contracts.InvoiceEvent)
    assert succeeded.type == paid.type == "invoice.paid"
    assert succeeded.source.stripe_event_type == "invoice.payment_succeeded"
    assert succeeded.invoice.id == paid.invoice.id


def test_upcoming_invoice_is_unhandled() -> None:
    with pytest.raises(UnhandledEventType):
        normalize(load("invoice.upcoming__syncengine__1.json"))


# -- payments and disputes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("charge_file", "intent_file"),
    [
        ("charge.succeeded__rubymock__1.json", "payment_intent.succeeded__rubymock__1.json"),
        ("charge.succeeded__zulip__1.json", "payment_intent.succeeded__zulip__1.json"),
    ],
)
def test_charge_and_intent_of_one_payment_share_the_payment_id(
    charge_file: str, intent_file: str
) -> None:
    by_charge = payment_of(charge_file)
    by_intent = payment_of(intent_file)

    assert by_charge.id == by_intent.id == by_intent.payment_intent_id
    assert by_charge.charge_id == by_intent.charge_id
    assert by_charge.status == by_intent.status == "succeeded"


def test_legacy_charge_without_intent_is_addressed_by_charge_id() -> None:
    payment = payment_of("charge.succeeded__nijikokun__1.json")

    assert (payment.id, payment.payment_intent_id) == ("ch_00000000000000", None)
    assert payment.invoice_id == "in_00000000000000"


def test_refund_carries_refunded_amount_and_invoice() -> None:
    event = normalize(load("charge.refunded__syncengine__1.json"))
    assert isinstance(event, contracts.PaymentEvent)

    assert event.type == "payment.refunded"
    assert event.payment.id == "pi_3Kl36gJDPojXS6LN02fQVtKR"
    assert (event.payment.amount, event.payment.amount_refunded) == (2500, 2500)
    assert event.payment.invoice_id == "in_1KJdKkJDPojXS6LNSwSWkZSN"


def test_failed_intent_reports_last_payment_error() -> None:
    payment = payment_of("payment_intent.payment_failed__rubymock__1.json")

    assert (payment.failure_code, payment.failure_message) == (
        "card_declined",
        "Your card was declined.",
    )
    assert payment.charge_id == "ch_000000000000000000000000"


def test_dispute_with_expanded_charge() -> None:
    raw = load("charge.dispute.created__syncengine__1.json")
    raw["data"]["object"]["charge"] = {
        "id": "ch_1IqtGAJDPojXS6LNstgEfUji",
        "object": "charge",
        "customer": {"id": "cus_disputer", "object": "customer"},
        "payment_intent": "pi_1IqtG9JDPojXS6LNOGnYrIqq",
    }
    del raw["data"]["object"]["payment_intent"]

    event = normalize(raw)
    assert isinstance(event, contracts.DisputeEvent)

    assert event.type == "dispute.opened"
    assert event.dispute.charge_id == "ch_1IqtGAJDPojXS6LNstgEfUji"
    assert event.dispute.payment_intent_id == "pi_1IqtG9JDPojXS6LNOGnYrIqq"
    assert event.customer_id == "cus_disputer"


def test_dispute_funds_reinstated_is_an_update() -> None:
    event = normalize(load("charge.dispute.funds_reinstated__rubymock__1.json"))
    assert isinstance(event, contracts.DisputeEvent)

    assert (event.type, event.dispute.charge_id, event.dispute.amount) == (
        "dispute.updated",
        "ch_00000000000000",
        25000,
    )


# -- checkout, customers, entitlements -----------------------------------------------------


def test_live_checkout_carries_livemode_and_buyer_email() -> None:
    event = normalize(load("checkout.session.completed__syncengine__1.json"))
    assert isinstance(event, contracts.CheckoutEvent)

    assert event.source.livemode is True
    assert event.customer_id == "cus_IhGfebO16cMIGN"
    assert event.checkout.customer_email == "billz@supabase.io"
    assert event.checkout.invoice_id == "in_1KJqKBJDPojXS6LNJbvLUgEy"


def test_checkout_client_reference_id_is_carried() -> None:
    # No fixture sets client_reference_id; it is the app's user id when it does.
    raw = load("checkout.session.completed__rubymock__1.json")
    raw["data"]["object"]["client_reference_id"] = "user-42"
    raw["data"]["object"]["metadata"] = {"plan": "pro", "seats": 5}

    event = normalize(raw)
    assert isinstance(event, contracts.CheckoutEvent)

    assert event.checkout.client_reference_id == "user-42"
    assert event.checkout.payment_intent_id == "pi_000000000000000000000000"
    assert event.checkout.metadata == {"plan": "pro", "seats": "5"}


def test_customer_metadata_user_id_is_carried() -> None:
    raw = load("customer.updated__syncengine__1.json")
    raw["data"]["object"]["metadata"]["user_id"] = "user-7"

    event = normalize(raw)
    assert isinstance(event, contracts.CustomerEvent)

    assert event.customer.user_id == "user-7"
    assert event.customer.metadata == {"supabase_org_id": "35", "user_id": "user-7"}
    assert event.customer_id == event.customer.id == "cus_IhGfebO16cMIGN"
    assert event.customer.email == "billz@supabase.io"


def test_customer_without_user_id_and_deleted_stub() -> None:
    updated = normalize(load("customer.updated__syncengine__1.json"))
    deleted = normalize(load("customer.deleted__syncengine__1.json"))

    assert isinstance(updated, contracts.CustomerEvent)
    assert isinstance(deleted, contracts.CustomerEvent)
    assert updated.customer.user_id is None
    assert (deleted.customer.deleted, deleted.customer.metadata) == (True, {})


def test_connect_account_is_carried() -> None:
    # The Connect fixtures are account.* (unhandled); carry their account on a handled one.
    connect = load("account.updated__djstripe__1.json")
    raw = load("charge.succeeded__syncengine__1.json")
    raw["account"] = connect["account"]

    event = normalize(raw)

    assert event.source.account == "acct_1Fg9jUA3kq9o1aTc"
    with pytest.raises(UnhandledEventType):
        normalize(connect)


def test_entitlement_summary_lookup_keys() -> None:
    event = normalize(load("entitlements.active_entitlement_summary.updated__syncengine__1.json"))
    assert isinstance(event, contracts.EntitlementSummaryEvent)

    assert event.customer_id == "cus_Sll319ReSxCmEi"
    assert event.summary.entitlements == [
        contracts.ActiveEntitlement(
            id="ent_test_61SzbY9Pui5KGP3yf41BRSrwpzKxHTFY",
            feature_id="feat_test_61SzbVaDzF2GIc5ng41BRSrwpzKxHABs",
            lookup_key="journeys",
        )
    ]
    assert event.summary.truncated is False


def test_entitlement_summary_with_expanded_feature() -> None:
    raw = load("entitlements.active_entitlement_summary.updated__syncengine__1.json")
    raw["data"]["object"] = load_object("entitlements.active_entitlement_summary.json")

    event = normalize(raw)
    assert isinstance(event, contracts.EntitlementSummaryEvent)

    assert [(e.feature_id, e.lookup_key) for e in event.summary.entitlements] == [
        ("obj_123", "lookup_key")
    ]
    assert event.summary.truncated is True  # Stripe's sample list says has_more


# -- partition key -------------------------------------------------------------------------


def test_partition_key_is_the_customer() -> None:
    event = normalize(load("customer.subscription.created__drfstripe__1.json"))
    assert partition_key(event) == "cus_tester"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("charge.dispute.created__rubymock__1.json", "dp_000000000000000000000000"),
        ("payment_intent.succeeded__rubymock__1.json", "pi_000000000000000000000000"),
    ],
)
def test_partition_key_falls_back_to_object_id(name: str, key: str) -> None:
    event = normalize(load(name))

    assert event.customer_id is None
    assert partition_key(event) == key


# -- garbage -------------------------------------------------------------------------------


def _mutated(name: str, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    raw = load(name)
    target = raw
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


_DELETE = object()
_SUB = "customer.subscription.created__drfstripe__1.json"
_CHARGE = "charge.succeeded__syncengine__1.json"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"type": "charge.succeeded", "data": {"object": {}}}, r"event\.id"),
        ({"id": "evt_1", "data": {"object": {}}}, r"event\.type"),
        ({"id": "evt_1", "type": ["charge.succeeded"]}, r"event\.type"),
        (_mutated(_CHARGE, ("data",), []), r"event\.data"),
        (_mutated(_CHARGE, ("data",), _DELETE), r"event\.data"),
        (_mutated(_CHARGE, ("data", "object"), "ch_1"), r"event\.data\.object"),
        (_mutated(_CHARGE, ("data", "object", "id"), _DELETE), r"data\.object\.id"),
        (_mutated(_CHARGE, ("created",), "yesterday"), r"event\.created"),
        (_mutated(_CHARGE, ("created",), 10**20), r"event\.created"),
        (_mutated(_CHARGE, ("livemode",), "false"), r"event\.livemode"),
        (_mutated(_CHARGE, ("data", "object", "customer"), 42), r"data\.object\.customer"),
        (_mutated(_SUB, ("data", "object", "customer"), {"email": "x"}), r"customer\.id"),
        (_mutated(_CHARGE, ("data", "object", "amount"), "30.00"), r"data\.object\.amount"),
        (_mutated(_CHARGE, ("data", "object", "metadata"), ["a"]), r"metadata"),
        (_mutated(_SUB, ("data", "object", "items"), {"data": "x"}), r"items\.data"),
        (_mutated(_SUB, ("data", "object", "status"), _DELETE), r"data\.object\.status"),
        (
            _mutated(
                "entitlements.active_entitlement_summary.updated__syncengine__1.json",
                ("data", "object", "entitlements"),
                _DELETE,
            ),
            r"entitlements",
        ),
    ],
)
def test_malformed_events_are_unmappable(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(UnmappableEvent, match=field):
        normalize(raw)


def test_non_mapping_event_is_unmappable() -> None:
    not_an_event: Any = ["evt_1"]
    with pytest.raises(UnmappableEvent):
        normalize(not_an_event)


# -- property: nothing but our two exceptions, whatever the shape --------------------------

_FIELD_NAMES = sorted(
    {
        "id", "customer", "status", "items", "data", "plan", "price", "product", "quantity",
        "current_period_start", "current_period_end", "cancel_at", "cancel_at_period_end",
        "ended_at", "canceled_at", "cancellation_details", "reason", "pause_collection",
        "behavior", "metadata", "amount", "amount_due", "amount_paid", "currency", "lines",
        "parent", "subscription_details", "subscription", "payments", "payment",
        "payment_intent", "charge", "charges", "latest_charge", "last_payment_error",
        "pricing", "price_details", "entitlements", "feature", "lookup_key", "paid",
        "deleted", "mode", "customer_details", "email", "is_default",
    }
)  # fmt: skip

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(["cus_1", "sub_1", "price_1", "active", "usd"])
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(st.dictionaries(st.sampled_from(_FIELD_NAMES), _json, max_size=12))
    data: Any = draw(
        st.fixed_dictionaries({"object": st.just(obj)}, optional={"previous_attributes": _json})
        | _json
    )
    return draw(
        st.fixed_dictionaries(
            {
                "id": st.text(max_size=6) | _json,
                "type": st.sampled_from(sorted(HANDLED_TYPES)),
                "created": st.integers(min_value=0, max_value=2**31) | _json,
                "livemode": st.booleans() | _json,
                "data": st.just(data),
            },
            optional={"api_version": _json, "account": _json},
        )
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events())
def test_arbitrary_events_raise_only_our_exceptions(raw: dict[str, Any]) -> None:
    try:
        event = normalize(raw)
    except (UnmappableEvent, UnhandledEventType):
        return
    assert contracts.parse_billing_event(event.model_dump_json()) == event


_HANDLED_FIXTURES = [p for p in FIXTURE_FILES if json.loads(p.read_text())["type"] in HANDLED_TYPES]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_real_events_with_one_field_replaced_raise_only_our_exceptions(data: st.DataObject) -> None:
    raw = copy.deepcopy(json.loads(data.draw(st.sampled_from(_HANDLED_FIXTURES)).read_text()))
    path = data.draw(st.sampled_from(_paths(raw)))
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(_json)

    try:
        event = normalize(raw)
    except (UnmappableEvent, UnhandledEventType):
        return
    assert contracts.parse_billing_event(event.model_dump_json()) == event


# -- what the contract refuses: 422 naming the path, the field and why -----------------------


def _sub_with(change: Any) -> dict[str, Any]:
    raw = load(_SUB)
    change(raw["data"]["object"])
    return raw


def _without(obj: dict[str, Any], *keys: str, **changes: Any) -> None:
    for key in keys:
        obj.pop(key, None)
    obj.update(changes)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (
            _sub_with(lambda o: o.update(customer=None)),
            "event: customer_id: required, but missing (null)",
        ),
        (
            _sub_with(lambda o: o.update(customer="cus_\x00evil")),
            r"event: customer_id: contains NUL (\u0000), which PostgreSQL cannot store",
        ),
        (
            _sub_with(lambda o: o["items"]["data"][0].update(quantity=-50)),
            "event.data.object.items.data[0]: quantity: Input should be greater than or "
            "equal to 0",
        ),
        (
            _sub_with(lambda o: o["items"]["data"][0].update(quantity=2**63)),
            "event.data.object.items.data[0]: quantity: Input should be less than or equal "
            "to 2147483647",
        ),
        (
            # (and no top-level plan: that is a 2014 subscription's one item)
            _sub_with(lambda o: _without(o, "items", "plan")),
            "event.data.object: items: List should have at least 1 item after validation, "
            "not 0",
        ),
        (
            _sub_with(lambda o: _without(o, "plan", items={"data": []})),
            "event.data.object: items: List should have at least 1 item",
        ),
        (
            _sub_with(lambda o: _without(o["items"]["data"][0], "price", "plan")),
            "event.data.object.items.data[0]: price (or plan) id is missing",
        ),
        (
            _sub_with(lambda o: o.update(metadata={"k\x00": "v"})),
            r'event.data.object: metadata["k\u0000"] (key): contains NUL',
        ),
    ],
    ids=["no-customer", "nul-customer", "negative-quantity", "bigint-quantity", "no-items",
         "empty-items", "no-price", "nul-metadata-key"],
)  # fmt: skip
def test_what_no_worker_can_apply_is_unmappable_with_a_clear_detail(
    raw: dict[str, Any], detail: str
) -> None:
    with pytest.raises(UnmappableEvent) as refused:
        normalize(raw)
    assert detail in str(refused.value)


def test_a_refusal_never_quotes_the_value() -> None:
    raw = load("customer.updated__syncengine__1.json")
    raw["data"]["object"]["email"] = "billz\x00@supabase.io"
    with pytest.raises(UnmappableEvent) as refused:
        normalize(raw)
    assert str(refused.value) == (
        r"event.data.object: email: contains NUL (\u0000), which PostgreSQL cannot store"
    )


def test_a_guest_one_off_purchase_is_unmappable_a_guest_payment_is_not() -> None:
    raw = load("payment_intent.succeeded__rubymock__1.json")
    assert normalize(raw).customer_id is None
    raw["data"]["object"]["metadata"] = {"lookup_key": "lifetime_deal"}
    with pytest.raises(UnmappableEvent, match="needs a customer_id to entitle"):
        normalize(raw)
