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
from tests.stripe_fixtures import FIXTURES, load_object


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


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def subscription_of(name: str) -> contracts.Subscription:
    event = normalize(load(name))
    assert isinstance(event, contracts.SubscriptionEvent)
    return event.subscription


def dispute_of(raw: dict[str, Any]) -> contracts.Dispute:
    event = normalize(raw)
    assert isinstance(event, contracts.DisputeEvent)
    return event.dispute


def invoice_of(raw: dict[str, Any]) -> contracts.Invoice:
    event = normalize(raw)
    assert isinstance(event, contracts.InvoiceEvent)
    return event.invoice


def payment_of(name: str) -> contracts.Payment:
    return payment_of_raw(load(name))


def payment_of_raw(raw: dict[str, Any]) -> contracts.Payment:
    event = normalize(raw)
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


def test_subscription_created_and_canceled_at() -> None:
    deleted = subscription_of("customer.subscription.deleted__drfstripe__1.json")
    # 2015 subscriptions have no created (their start moved with plan changes).
    old = subscription_of("customer.subscription.created__nijikokun__1.json")

    assert (deleted.created_at, deleted.canceled_at) == (at(1642150469), at(1642152635))
    assert (old.created_at, old.canceled_at) == (None, None)


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


def test_2020_invoice_totals_paid_at_and_line_details() -> None:
    paid = invoice_of(load("invoice.paid__syncengine__1.json"))
    created = invoice_of(load("invoice.created__rubymock__1.json"))

    # Empty total_discount_amounts / total_tax_amounts lists: nothing off, no tax.
    assert (paid.created_at, paid.subtotal, paid.discount, paid.tax) == (at(1642645471), 0, 0, 0)
    assert paid.paid_at == at(1642649110)
    assert created.paid_at is None
    assert [(ln.id, ln.unit_amount, ln.period_start, ln.period_end) for ln in created.lines] == [
        ("il_000000000000000000000000", 1500, at(1648320110), at(1650998510))
    ]


def test_clover_invoice_line_unit_amount_from_pricing_decimal() -> None:
    inv = invoice_of(load("invoice.paid__zulip__2.json"))

    assert [(ln.quantity, ln.amount, ln.unit_amount) for ln in inv.lines] == [(123, 984000, 8000)]
    # basil has no tax field: total_taxes (empty here) says it.
    assert (inv.subtotal, inv.discount, inv.tax, inv.paid_at) == (984000, 0, 0, at(1000000000))


def test_2015_invoice_created_from_date_and_unknown_totals() -> None:
    inv = invoice_of(load("invoice.payment_succeeded__nijikokun__1.json"))

    assert inv.created_at == at(1419171865)  # `date` before 2019-03-14
    assert (inv.subtotal, inv.discount, inv.tax, inv.paid_at) == (212, None, None, None)
    # The line's id is its subscription's (sub_...), which names no line; the plan's
    # amount is the unit amount.
    assert [(ln.id, ln.unit_amount, ln.period_start) for ln in inv.lines] == [
        (None, 212, at(1446710599))
    ]


def test_invoice_discount_and_tax_are_sums_of_their_lists() -> None:
    # No fixture has a discount or tax; fill the real 2020 invoice's lists as Stripe does.
    raw = load("invoice.created__rubymock__1.json")
    obj = raw["data"]["object"]
    obj["total_discount_amounts"] = [
        {"amount": 150, "discount": "di_1"},
        {"amount": 50, "discount": "di_2"},
    ]
    obj["discount"] = {"object": "discount", "coupon": {"percent_off": 10, "amount_off": None}}
    obj["total_tax_amounts"] = [
        {"amount": 119, "inclusive": False, "tax_rate": "txr_1"},
        {"amount": 7, "inclusive": True, "tax_rate": "txr_2"},
    ]

    inv = invoice_of(raw)
    assert (inv.discount, inv.tax) == (200, 126)

    obj["tax"] = 130  # the top-level total wins where Stripe gives one
    assert invoice_of(raw).tax == 130

    # A legacy coupon alone is no amount: unknown, not zero.
    del obj["total_discount_amounts"]
    assert invoice_of(raw).discount is None


def test_basil_invoice_tax_from_total_taxes() -> None:
    raw = load("invoice.paid__zulip__1.json")
    raw["data"]["object"]["total_taxes"] = [
        {"amount": 800, "tax_behavior": "exclusive", "taxability_reason": "standard_rated"},
        {"amount": 100, "tax_behavior": "inclusive", "taxability_reason": "standard_rated"},
    ]

    assert invoice_of(raw).tax == 900


@pytest.mark.parametrize(
    ("pricing", "unit_amount"),
    [("8000.000000000000", 8000), ("0", 0), ("-250", -250), ("12.5", None), (None, None)],
)
def test_line_unit_amount_decimal_counts_only_when_whole(
    pricing: str | None, unit_amount: int | None
) -> None:
    raw = load("invoice.paid__zulip__1.json")
    raw["data"]["object"]["lines"]["data"][0]["pricing"]["unit_amount_decimal"] = pricing

    assert invoice_of(raw).lines[0].unit_amount == unit_amount


def test_line_unit_amount_of_a_price_in_another_currency() -> None:
    # A multi-currency price reads in its default currency at the top level; the line is
    # in the invoice's. Stripe's sample price (usd) on a real invoice turned to eur.
    raw = load("invoice.created__rubymock__1.json")
    obj = raw["data"]["object"]
    obj["currency"] = "eur"
    line = obj["lines"]["data"][0]
    line["price"] = load_object("price.json")
    del line["plan"]

    assert load_object("price.json")["currency"] == "usd"
    assert invoice_of(raw).lines[0].unit_amount is None
    line["price"]["currency_options"] = {"eur": {"unit_amount": 1300}}
    assert invoice_of(raw).lines[0].unit_amount == 1300
    line["price"] = "price_only_an_id"
    assert invoice_of(raw).lines[0].unit_amount is None


def test_payment_succeeded_and_paid_address_the_same_invoice() -> None:
    succeeded = normalize(load("invoice.payment_succeeded__rubymock__1.json"))
    paid = normalize(load("invoice.paid__rubymock__1.json"))

    assert isinstance(succeeded, contracts.InvoiceEvent)
    assert isinstance(paid, contracts.InvoiceEvent)
    assert succeeded.type == paid.type == "invoice.paid"
    assert succeeded.source.stripe_event_type == "invoice.payment_succeeded"
    assert succeeded.invoice.id == paid.invoice.id


def test_clover_invoice_payment_links_an_invoice_to_its_intent() -> None:
    event = normalize(load("invoice_payment.paid__zulip__1.json"))
    assert isinstance(event, contracts.InvoicePaymentEvent)
    link = event.invoice_payment
    assert (event.type, event.customer_id) == ("invoice_payment.paid", None)
    assert (link.invoice_id, link.payment_intent_id, link.charge_id) == (
        "in_NORMALIZED",
        "pi_NORMALIZED",
        None,
    )
    assert (link.amount_paid, link.currency, link.status) == (4800, "usd", "paid")
    # No customer: keyed by its invoice.
    assert partition_key(event) == "in_NORMALIZED"

    raw = load("invoice_payment.paid__zulip__1.json")
    raw["data"]["object"]["payment"] = {"type": "charge", "charge": "ch_legacy"}
    raw["data"]["object"]["invoice"] = {"id": "in_expanded", "object": "invoice"}
    charged = normalize(raw)
    assert isinstance(charged, contracts.InvoicePaymentEvent)
    assert (charged.invoice_payment.invoice_id, charged.invoice_payment.charge_id) == (
        "in_expanded",
        "ch_legacy",
    )
    del raw["data"]["object"]["invoice"]
    with pytest.raises(UnmappableEvent, match=r"object\.invoice"):
        normalize(raw)


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


@pytest.mark.parametrize(
    ("name", "brand", "last4", "captured"),
    [
        ("charge.succeeded__rubymock__1.json", "visa", "4242", 2000),
        ("charge.succeeded__zulip__1.json", "visa", "4242", 48000),
        ("charge.refunded__syncengine__1.json", "mastercard", "7572", 2500),
        # 2015: no payment_method_details; the card is the charge's source, its brand a
        # display name ("Visa"), and nothing says how much was captured.
        ("charge.succeeded__nijikokun__1.json", "visa", "4242", None),
    ],
)
def test_charge_card_brand_last4_captured_and_created(
    name: str, brand: str, last4: str, captured: int | None
) -> None:
    payment = payment_of(name)

    assert (payment.payment_method_type, payment.card_brand, payment.card_last4) == (
        "card",
        brand,
        last4,
    )
    assert payment.amount_captured == captured
    charge = load(name)["data"]["object"]
    assert payment.charge_created_at == at(charge["created"])
    # A charge of an intent was created for one attempt: the payment's creation is the
    # intent's, which the charge's event does not know.
    assert payment.created_at == (None if charge.get("payment_intent") else at(charge["created"]))


def test_non_card_payment_has_a_type_and_no_card() -> None:
    # No fixture pays by debit; Stripe's sepa_debit details on a real charge.
    raw = load("charge.succeeded__syncengine__1.json")
    raw["data"]["object"]["payment_method_details"] = {
        "type": "sepa_debit",
        "sepa_debit": {"bank_code": "37040044", "country": "DE", "last4": "3000"},
    }

    payment = normalize(raw)
    assert isinstance(payment, contracts.PaymentEvent)
    assert (payment.payment.payment_method_type, payment.payment.card_brand) == ("sepa_debit", None)
    assert payment.payment.card_last4 is None


def test_intent_card_details_from_its_charges_list() -> None:
    succeeded = payment_of("payment_intent.succeeded__rubymock__1.json")
    failed = payment_of("payment_intent.payment_failed__rubymock__1.json")

    assert (succeeded.card_brand, succeeded.card_last4, succeeded.amount_captured) == (
        "visa",
        "4242",
        2000,
    )
    assert (failed.card_last4, failed.amount_captured, failed.refunds) == ("0002", 0, [])
    assert succeeded.created_at == at(1648320032)
    charges = load("payment_intent.succeeded__rubymock__1.json")["data"]["object"]["charges"]
    assert succeeded.charge_created_at == at(charges["data"][0]["created"])


def test_intent_card_details_and_refunds_from_expanded_latest_charge() -> None:
    # Webhooks carry latest_charge as an id (the clover intent here: no card details);
    # expanded, it is the charge object: the real clover charge it names, refunded.
    raw = load("payment_intent.succeeded__zulip__1.json")
    assert payment_of("payment_intent.succeeded__zulip__1.json").card_brand is None
    charge = load("charge.succeeded__zulip__1.json")["data"]["object"]
    charge["refunds"] = {"object": "list", "data": [load_object("refund.json")]}
    raw["data"]["object"]["latest_charge"] = charge

    event = normalize(raw)
    assert isinstance(event, contracts.PaymentEvent)
    payment = event.payment

    assert payment.charge_id == charge["id"]
    assert (payment.payment_method_type, payment.card_brand, payment.card_last4) == (
        "card",
        "visa",
        "4242",
    )
    assert payment.amount_captured == 48000
    assert [(r.id, r.charge_id, r.amount) for r in payment.refunds] == [
        ("re_1Pgc72B7WZ01zgkWqPvrRrPE", "ch_1PgafuB7WZ01zgkWXYmPNZs8", 100)
    ]


@pytest.mark.parametrize(
    ("name", "refund"),
    [
        (
            "charge.refunded__rubymock__1.json",
            contracts.Refund(
                id="re_000000000000000000000000",
                charge_id="ch_000000000000000000000000",
                payment_intent_id=None,
                amount=100,
                currency="usd",
                status="succeeded",
                reason=None,
                created_at=at(1648319949),
            ),
        ),
        (
            "charge.refunded__syncengine__1.json",
            contracts.Refund(
                id="re_3Kl36gJDPojXS6LN0eP4yPDz",
                charge_id="ch_3Kl36gJDPojXS6LN0DCM4A8l",
                payment_intent_id="pi_3Kl36gJDPojXS6LN02fQVtKR",
                amount=2500,
                currency="usd",
                status="succeeded",
                reason=None,
                created_at=at(1649321738),
            ),
        ),
    ],
)
def test_charge_refunded_lists_its_refunds(name: str, refund: contracts.Refund) -> None:
    assert payment_of(name).refunds == [refund]


def test_charge_refunds_take_charge_and_currency_from_the_charge() -> None:
    # Since 2022-11-15 refunds are only listed when expanded; a listed refund that omits
    # its charge, intent or currency refunds this charge, in its currency.
    raw = load("charge.refunded__syncengine__1.json")
    [listed] = raw["data"]["object"]["refunds"]["data"]
    del listed["charge"], listed["payment_intent"], listed["currency"]

    [refund] = payment_of_raw(raw).refunds
    assert (refund.charge_id, refund.payment_intent_id, refund.currency) == (
        "ch_3Kl36gJDPojXS6LN0DCM4A8l",
        "pi_3Kl36gJDPojXS6LN02fQVtKR",
        "usd",
    )
    del raw["data"]["object"]["refunds"]
    assert payment_of_raw(raw).refunds == []


_CARD_FIXTURES = [
    "charge.succeeded__nijikokun__1.json",
    "charge.succeeded__rubymock__1.json",
    "charge.succeeded__syncengine__1.json",
    "charge.succeeded__zulip__1.json",
    "charge.refunded__rubymock__1.json",
    "charge.refunded__syncengine__1.json",
    "payment_intent.succeeded__rubymock__1.json",
    "payment_intent.payment_failed__rubymock__1.json",
]


def _cards(node: Any) -> list[dict[str, Any]]:
    """Every card object inside a Stripe object: payment_method_details.card, a source."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "last4" in node and ("exp_month" in node or "fingerprint" in node):
            found.append(node)
        for value in node.values():
            found += _cards(value)
    elif isinstance(node, list):
        for value in node:
            found += _cards(value)
    return found


def _strings(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_strings(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_strings(value) for value in node))
    return {node} if isinstance(node, str) else set()


@pytest.mark.parametrize("name", _CARD_FIXTURES)
def test_no_card_data_beyond_brand_last4_and_type_is_normalized(name: str) -> None:
    raw = load(name)
    cards = _cards(raw["data"]["object"])
    assert cards  # the fixture does carry a card
    card_values = _strings(cards)
    text = normalize(raw).model_dump_json()

    # Strip every card to its brand and last4: what is published stays the same ...
    for card in cards:
        for key in list(card):
            if key not in ("brand", "last4", "object"):
                del card[key]
    assert normalize(raw).model_dump_json() == text
    # ... and no other text of a card (fingerprint, holder's name, country, funding)
    # is in it, unless the event holds it elsewhere too (Zulip's NORMALIZED).
    assert "exp_month" not in text and "fingerprint" not in text
    elsewhere = json.dumps(raw)
    card_only = [value for value in card_values if value not in elsewhere]
    assert card_only
    assert [value for value in card_only if value in text] == []


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


def test_dispute_dates_and_withdrawn_funds() -> None:
    dispute = dispute_of(load("charge.dispute.funds_reinstated__rubymock__1.json"))

    assert (dispute.created_at, dispute.evidence_due_by) == (at(1516145022), at(1517529599))
    # Its one balance transaction withdrew 25000 (and a 1500 fee, which is not the
    # disputed money).
    assert (dispute.amount_withdrawn, dispute.amount_reinstated) == (25000, 0)
    opened = dispute_of(load("charge.dispute.created__syncengine__1.json"))
    assert (opened.amount_withdrawn, opened.amount_reinstated) == (0, 0)


def test_dispute_funds_count_expanded_transactions_in_its_currency() -> None:
    # The real funds_reinstated event with its withdrawal followed by the reinstatement a
    # won dispute gets, a bare id and one settled in another currency.
    raw = load("charge.dispute.funds_reinstated__rubymock__1.json")
    txns = raw["data"]["object"]["balance_transactions"]
    withdrawal = txns[0]
    txns += [
        {**withdrawal, "id": "txn_back", "amount": 25000, "net": 26500, "fee": -1500},
        "txn_only_an_id",
        {**withdrawal, "id": "txn_eur", "amount": -23000, "currency": "eur"},
    ]

    dispute = dispute_of(raw)
    assert (dispute.amount_withdrawn, dispute.amount_reinstated) == (25000, 25000)


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


# -- refunds --------------------------------------------------------------------------------

# No refund.* or charge.refund.updated event is among the fixtures: these events are built
# around Stripe's sample refund (objects/refund.json) in the envelope of a real event.


def refund_event(stripe_type: str, **changes: Any) -> dict[str, Any]:
    raw = load("charge.refunded__rubymock__1.json")
    raw["type"] = stripe_type
    raw["data"] = {"object": {**load_object("refund.json"), **changes}}
    return raw


@pytest.mark.parametrize(
    ("stripe_type", "our_type"),
    [
        ("refund.created", "refund.created"),
        ("refund.updated", "refund.updated"),
        ("refund.failed", "refund.failed"),
        ("charge.refund.updated", "refund.updated"),
    ],
)
def test_refund_events(stripe_type: str, our_type: str) -> None:
    raw = refund_event(stripe_type)
    event = normalize(raw)
    assert isinstance(event, contracts.RefundEvent)

    assert event.type == our_type
    assert event.source.stripe_event_type == stripe_type
    assert event.refund == contracts.Refund(
        id="re_1Pgc72B7WZ01zgkWqPvrRrPE",
        charge_id="ch_1PgafuB7WZ01zgkWXYmPNZs8",
        payment_intent_id=None,
        amount=100,
        currency="usd",
        status="succeeded",
        reason=None,
        created_at=at(1234567890),
    )
    assert contracts.parse_billing_event(event.model_dump_json()) == event
    # Stripe's sample refund has "customer": null and its charge only as an id.
    assert event.customer_id is None
    assert partition_key(event) == "ch_1PgafuB7WZ01zgkWXYmPNZs8"


def test_failed_refund_carries_status_and_reason() -> None:
    event = normalize(
        refund_event("refund.failed", status="failed", reason="requested_by_customer")
    )
    assert isinstance(event, contracts.RefundEvent)
    assert (event.refund.status, event.refund.reason) == ("failed", "requested_by_customer")


def test_refund_customer_is_its_own_else_its_expanded_charges() -> None:
    charge = {"id": "ch_1PgafuB7WZ01zgkWXYmPNZs8", "object": "charge", "customer": "cus_charged"}
    by_charge = normalize(refund_event("refund.created", charge=charge))
    own = normalize(refund_event("refund.created", charge=charge, customer="cus_refunded"))

    assert isinstance(by_charge, contracts.RefundEvent)
    assert by_charge.refund.charge_id == "ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert (by_charge.customer_id, own.customer_id) == ("cus_charged", "cus_refunded")
    assert partition_key(own) == "cus_refunded"


def test_refund_without_charge_or_customer_is_keyed_by_its_id() -> None:
    # Refunds of some payment methods name only the intent.
    event = normalize(refund_event("refund.updated", charge=None, payment_intent="pi_1"))
    assert isinstance(event, contracts.RefundEvent)

    assert (event.refund.charge_id, event.refund.payment_intent_id) == (None, "pi_1")
    assert partition_key(event) == "re_1Pgc72B7WZ01zgkWqPvrRrPE"


# -- partition key -------------------------------------------------------------------------


def test_partition_key_is_the_customer() -> None:
    event = normalize(load("customer.subscription.created__drfstripe__1.json"))
    assert partition_key(event) == "cus_tester"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # A dispute: its charge, with that charge's customer-less refunds.
        ("charge.dispute.created__rubymock__1.json", "ch_000000000000000000000000"),
        ("payment_intent.succeeded__rubymock__1.json", "pi_000000000000000000000000"),
    ],
)
def test_partition_key_falls_back_to_object_id(name: str, key: str) -> None:
    event = normalize(load(name))

    assert event.customer_id is None
    assert partition_key(event) == key


# -- garbage -------------------------------------------------------------------------------


def _mutated(name: str, path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    raw = load(name)
    target: Any = raw  # objects and lists (an int key indexes a list)
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
_REFUNDED = "charge.refunded__syncengine__1.json"
_INTENT = "payment_intent.succeeded__rubymock__1.json"
_INVOICE = "invoice.created__rubymock__1.json"
_CLOVER = "invoice.paid__zulip__1.json"
_DISPUTE = "charge.dispute.funds_reinstated__rubymock__1.json"
_CARD = ("data", "object", "payment_method_details", "card")
_LISTED = ("data", "object", "refunds", "data", 0)
_PRICING = ("data", "object", "lines", "data", 0, "pricing")


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
        # the ledger fields
        (_mutated(_SUB, ("data", "object", "canceled_at"), "soon"), r"object\.canceled_at"),
        (_mutated(_SUB, ("data", "object", "created"), True), r"object\.created"),
        (_mutated(_CHARGE, ("data", "object", "amount_captured"), "3000"), r"amount_captured"),
        (_mutated(_CHARGE, (*_CARD, "last4"), 4242), r"payment_method_details\.card\.last4"),
        (_mutated(_CHARGE, (*_CARD, "brand"), ["visa"]), r"payment_method_details\.card\.brand"),
        (_mutated(_CHARGE, (*_CARD[:-1], "type"), 1), r"payment_method_details\.type"),
        (_mutated(_CHARGE, ("data", "object", "refunds"), "re_1"), r"object\.refunds"),
        (_mutated(_REFUNDED, (*_LISTED, "amount"), "25.00"), r"refunds\.data\[0\]\.amount"),
        (_mutated(_REFUNDED, (*_LISTED, "id"), _DELETE), r"refunds\.data\[0\]\.id"),
        (_mutated(_REFUNDED, (*_LISTED, "charge"), 7), r"refunds\.data\[0\]\.charge"),
        (_mutated(_REFUNDED, (*_LISTED, "created"), "today"), r"refunds\.data\[0\]\.created"),
        (
            _mutated(_INTENT, ("data", "object", "charges", "data", 0, *_CARD[2:], "last4"), 1),
            r"charges\.data\[0\]\.payment_method_details\.card\.last4",
        ),
        (_mutated(_INVOICE, ("data", "object", "subtotal"), "15.00"), r"object\.subtotal"),
        (_mutated(_INVOICE, ("data", "object", "tax"), 1.5), r"object\.tax"),
        (
            _mutated(_INVOICE, ("data", "object", "total_tax_amounts"), [{"amount": "1"}]),
            r"total_tax_amounts\[0\]\.amount",
        ),
        (
            _mutated(_INVOICE, ("data", "object", "total_discount_amounts"), [{}]),
            r"total_discount_amounts\[0\]\.amount",
        ),
        (
            _mutated(_INVOICE, ("data", "object", "status_transitions"), {"paid_at": "now"}),
            r"status_transitions\.paid_at",
        ),
        (
            _mutated(_INVOICE, ("data", "object", "lines", "data", 0, "period"), "may"),
            r"lines\.data\[0\]\.period",
        ),
        (
            _mutated(_INVOICE, ("data", "object", "lines", "data", 0, "price", "unit_amount"), "1"),
            r"lines\.data\[0\]\.price\.unit_amount",
        ),
        (_mutated(_CLOVER, (*_PRICING, "unit_amount_decimal"), 8000), r"unit_amount_decimal"),
        (_mutated(_CLOVER, (*_PRICING, "unit_amount_decimal"), "8e3"), r"unit_amount_decimal"),
        (_mutated(_CLOVER, (*_PRICING, "unit_amount_decimal"), "NaN"), r"unit_amount_decimal"),
        (_mutated(_CLOVER, (*_PRICING, "unit_amount_decimal"), "9" * 5000), r"out of range"),
        (
            _mutated(_DISPUTE, ("data", "object", "balance_transactions"), 5),
            r"balance_transactions",
        ),
        (
            _mutated(_DISPUTE, ("data", "object", "balance_transactions"), [42]),
            r"balance_transactions\[0\]",
        ),
        (
            _mutated(_DISPUTE, ("data", "object", "balance_transactions", 0, "amount"), None),
            r"balance_transactions\[0\]\.amount",
        ),
        (
            _mutated(_DISPUTE, ("data", "object", "evidence_details"), {"due_by": "soon"}),
            r"evidence_details\.due_by",
        ),
        (refund_event("refund.created", amount="1.00"), r"data\.object\.amount"),
        (refund_event("refund.created", id=None), r"data\.object\.id"),
        (refund_event("refund.updated", charge=42), r"data\.object\.charge"),
        (refund_event("refund.updated", currency=None), r"data\.object\.currency"),
        (refund_event("refund.failed", customer={"email": "x"}), r"customer\.id"),
        (refund_event("charge.refund.updated", status=False), r"data\.object\.status"),
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
        "deleted", "mode", "customer_details", "email", "is_default", "created", "date",
        "subtotal", "total_discount_amounts", "tax", "total_taxes", "total_tax_amounts",
        "status_transitions", "paid_at", "unit_amount", "unit_amount_decimal", "period",
        "start", "end", "unique_id", "type", "currency_options", "amount_captured",
        "captured", "payment_method_details", "card", "brand", "last4", "source", "object",
        "refunds", "evidence_details", "due_by", "balance_transactions",
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
        (
            _mutated(_CHARGE, (*_CARD, "last4"), "42424"),
            "event.data.object: card_last4: String should have at most 4 characters",
        ),
        (
            _mutated(_REFUNDED, (*_LISTED, "amount"), 2**63),
            "event.data.object.refunds.data[0]: amount: Input should be less than or equal "
            "to 9223372036854775807",
        ),
        (
            refund_event("refund.created", created=253_000_000_000),
            "event.data.object: created_at: Input should be less than 9000-01-02T00:00:00Z",
        ),
    ],
    ids=["no-customer", "nul-customer", "negative-quantity", "bigint-quantity", "no-items",
         "empty-items", "no-price", "nul-metadata-key", "long-last4", "bigint-refund",
         "refund-in-year-9987"],
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
