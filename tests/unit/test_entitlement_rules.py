"""Pure entitlement rules: each subscription lifecycle case, add-ons (in the same
subscription and across sources), seats, fallback, one-off purchases and refunds, Stripe's
summary, the effective set and the order of events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from contracts import Subscription
from tests.entitlement_support import at, item, make_catalog, payment, subscription
from workers.entitlement import rules
from workers.entitlement.rules import Addon, Effective, Grant, Mark, PastDueTrack, SourceGrants
from workers.runtime.spec import Poison

CATALOG = make_catalog()
GRACE = timedelta(days=3)
NOW = at("2025-06-01T12:00:00")
PERIOD_END = at("2025-07-01T00:00:00")
PRO = item(lookup_key="pro_monthly")
ADDON = item(lookup_key="addon_calls")
ADDON_FOR = ("pro", "syncengine_base", "drf_pro")


def source_grants(sub: Subscription, past_due_since: datetime | None = None) -> SourceGrants:
    return rules.subscription_grants(sub, CATALOG, past_due_since=past_due_since, grace=GRACE)


def grants(sub: Subscription, past_due_since: datetime | None = None) -> rules.Grants:
    return source_grants(sub, past_due_since).features


def test_active_grants_without_expiry() -> None:
    assert grants(subscription([PRO], period_end=PERIOD_END)) == {
        "sso": Grant(None, None),
        "api_calls": Grant(1000, None),
        "storage_gb": Grant(10, None),
    }


def test_trial_grants_until_trial_end() -> None:
    trial_end = at("2025-06-15T00:00:00")
    result = grants(subscription([PRO], status="trialing", trial_end=trial_end))
    assert {grant.expires_at for grant in result.values()} == {trial_end}


def test_past_due_keeps_access_for_the_grace_period_from_its_start() -> None:
    since = NOW - timedelta(days=1)
    result = grants(subscription([PRO], status="past_due"), past_due_since=since)
    assert result["sso"] == Grant(None, since + GRACE)
    assert "sso" in rules.effective({"sub": SourceGrants(result)}, NOW)


def test_past_due_after_the_grace_period_has_no_access() -> None:
    since = NOW - GRACE - timedelta(seconds=1)
    result = grants(subscription([PRO], status="past_due"), past_due_since=since)
    assert rules.effective({"sub": SourceGrants(result)}, NOW) == {}


def test_cancel_at_period_end_expires_at_period_end() -> None:
    sub = subscription([PRO], period_end=PERIOD_END, cancel_at_period_end=True)
    assert {grant.expires_at for grant in grants(sub).values()} == {PERIOD_END}


def test_trial_canceled_at_period_end_expires_at_the_earlier_end() -> None:
    trial_end = PERIOD_END - timedelta(days=20)
    sub = subscription(
        [PRO],
        status="trialing",
        trial_end=trial_end,
        period_end=PERIOD_END,
        cancel_at_period_end=True,
    )
    assert {grant.expires_at for grant in grants(sub).values()} == {trial_end}


@pytest.mark.parametrize("status", ["canceled", "unpaid", "incomplete", "incomplete_expired"])
def test_ended_or_unpaid_subscriptions_grant_nothing(status: str) -> None:
    assert source_grants(subscription([PRO, ADDON], status=status)) == SourceGrants()


def test_immediate_cancellation_grants_nothing() -> None:
    assert grants(subscription([PRO], canceled_at=NOW)) == {}


def test_paused_loses_access_and_resumed_regains_it() -> None:
    assert grants(subscription([PRO], status="paused")) == {}
    assert grants(subscription([PRO], paused=True)) == {}
    assert grants(subscription([PRO])) != {}


def test_unknown_status_is_poison() -> None:
    with pytest.raises(Poison, match="unknown status 'frozen'"):
        grants(subscription([PRO], status="frozen"))


def test_seats_multiply_per_seat_limits_only() -> None:
    result = grants(subscription([item(lookup_key="pro_monthly", quantity=4)]))
    assert result["storage_gb"] == Grant(40, None)
    assert result["api_calls"] == Grant(1000, None)


def test_addon_adds_to_its_base() -> None:
    sub = subscription([PRO, item(lookup_key="addon_calls", quantity=2)])
    result = grants(sub)
    assert result["api_calls"] == Grant(1250, None)  # add-on limits are not per seat here
    assert result["priority_support"] == Grant(None, None)


def test_addon_with_its_base_is_folded_into_the_subscription() -> None:
    result = source_grants(subscription([PRO, ADDON]))
    assert result.bases == {"pro": None} and result.addons == ()


def test_addon_without_its_base_is_kept_apart_for_a_base_held_elsewhere() -> None:
    alone = source_grants(subscription([item(lookup_key="addon_calls", quantity=2)]))
    assert alone.features == {} and alone.bases == {}
    assert alone.addons == (
        Addon(
            "addon_calls",
            ADDON_FOR,
            {"api_calls": Grant(250, None), "priority_support": Grant(None, None)},
        ),
    )
    # `team` is not one of the add-on's bases: the add-on adds nothing to it here.
    trial_end = NOW + timedelta(days=5)
    sub = subscription([item("price_team"), ADDON], status="trialing", trial_end=trial_end)
    result = source_grants(sub)
    assert result.features["api_calls"] == Grant(5000, trial_end)
    assert "priority_support" not in result.features
    assert result.bases == {"team": trial_end}
    assert [(a.entry, a.grants["api_calls"]) for a in result.addons] == [
        ("addon_calls", Grant(250, trial_end))  # the add-on's own window: its subscription's
    ]


def test_plan_change_replaces_the_features() -> None:
    before = grants(subscription([PRO]))
    after = grants(subscription([item("price_team")]))
    assert "storage_gb" in before and "storage_gb" not in after
    assert after["audit_log"] == Grant(None, None)


def test_base_items_combine_by_maximum() -> None:
    result = grants(subscription([PRO, item("price_team")]))
    assert result["api_calls"] == Grant(5000, None)


def test_product_metadata_fallback() -> None:
    fallback = item("price_unknown", product_id="prod_x", product_metadata={"features": "a,b=7"})
    assert grants(subscription([fallback])) == {"a": Grant(None, None), "b": Grant(7, None)}


def test_unknown_price_is_poison_naming_it() -> None:
    with pytest.raises(Poison, match=r"price 'price_unknown'.*product 'prod_x'"):
        grants(subscription([item("price_unknown", product_id="prod_x")]))


def test_invalid_product_metadata_is_poison() -> None:
    bad = item("price_unknown", product_id="prod_x", product_metadata={"features": "a=lots"})
    with pytest.raises(Poison, match="metadata 'features' is invalid"):
        grants(subscription([bad]))


def test_canceled_subscription_needs_no_catalog_entry() -> None:
    assert grants(subscription([item("price_unknown")], status="canceled")) == {}


def test_one_off_purchase_with_and_without_duration() -> None:
    pass_30d = rules.one_off_grants(CATALOG.products["pass_30d"], quantity=1, purchased_at=NOW)
    assert pass_30d.features["export"] == Grant(None, NOW + timedelta(days=30))
    assert pass_30d.bases == {"pass_30d": NOW + timedelta(days=30)}
    lifetime = rules.one_off_grants(CATALOG.products["lifetime_deal"], quantity=1, purchased_at=NOW)
    assert lifetime.features["projects"] == Grant(10, None)
    assert lifetime.bases == {"lifetime_deal": None}


def test_one_off_addon_only_when_the_catalog_sells_it_one_off() -> None:
    with pytest.raises(Poison, match="'addon_calls' is an add-on not sold one-off"):
        rules.one_off_grants(CATALOG.products["addon_calls"], quantity=1, purchased_at=NOW)
    calls = rules.one_off_grants(CATALOG.products["calls_pass"], quantity=2, purchased_at=NOW)
    assert calls == SourceGrants(
        addons=(Addon("calls_pass", ("pro",), {"api_calls": Grant(300, NOW + timedelta(days=10))}),)
    )


def test_only_a_full_refund_ends_a_purchase() -> None:
    assert rules.fully_refunded(payment("pi_1", amount=1000, refunded=1000))
    assert not rules.fully_refunded(payment("pi_1", amount=1000, refunded=999))
    assert not rules.fully_refunded(payment("pi_1", amount=1000, refunded=0))


def test_summary_replaces_or_with_truncation_only_adds() -> None:
    previous = {"a": Grant(None, None), "b": Grant(None, None)}
    assert rules.summary_grants(["b", "c"], previous=previous, truncated=False) == {
        "b": Grant(None, None),
        "c": Grant(None, None),
    }
    assert set(rules.summary_grants(["c"], previous=previous, truncated=True)) == {"a", "b", "c"}


def test_effective_takes_max_limit_and_latest_expiry_over_unexpired_sources() -> None:
    soon, later = NOW + timedelta(days=1), NOW + timedelta(days=9)
    sources = {
        "sub_a": SourceGrants({"api_calls": Grant(100, soon), "sso": Grant(None, later)}),
        "pi_b": SourceGrants({"api_calls": Grant(50, later), "sso": Grant(None, None)}),
        "pi_old": SourceGrants({"api_calls": Grant(10_000, NOW), "gone": Grant(None, NOW)}),
    }
    assert rules.effective(sources, NOW) == {
        "api_calls": Effective(100, later, ("pi_b", "sub_a")),
        "sso": Effective(None, None, ("pi_b", "sub_a")),
    }
    assert rules.next_expiry(sources, NOW) == soon


def calls_addon(limit: int, until: datetime | None = None) -> SourceGrants:
    return SourceGrants(
        addons=(Addon("addon_calls", ADDON_FOR, {"api_calls": Grant(limit, until)}),)
    )


def test_addons_add_to_the_highest_base_held_from_any_source() -> None:
    sources = {
        "sub_team": SourceGrants({"api_calls": Grant(5000, None)}, {"team": None}),
        "sub_pro": SourceGrants({"api_calls": Grant(1000, None)}, {"pro": None}),
        "sub_addon": calls_addon(250),
        "pi_addon": calls_addon(100),
    }
    # As within one subscription: the highest base grant plus every add-on of a held base.
    assert rules.effective(sources, NOW) == {
        "api_calls": Effective(5350, None, ("pi_addon", "sub_addon", "sub_pro", "sub_team"))
    }


def test_addon_waits_for_its_base_and_ends_with_it() -> None:
    base_end, addon_end = NOW + timedelta(days=3), NOW + timedelta(days=7)
    addon = SourceGrants(
        addons=(
            Addon(
                "addon_calls",
                ADDON_FOR,
                {"api_calls": Grant(250, addon_end), "priority_support": Grant(None, addon_end)},
            ),
        )
    )
    assert rules.effective({"sub_addon": addon}, NOW) == {}
    # `team` is not one of its bases; an expired `pro` is not held.
    team = SourceGrants({"audit_log": Grant(None, None)}, {"team": None})
    expired = SourceGrants({"api_calls": Grant(1000, NOW)}, {"pro": NOW})
    assert rules.effective({"a": addon, "b": team, "c": expired}, NOW) == {
        "audit_log": Effective(None, None, ("b",))
    }
    trial = SourceGrants({"api_calls": Grant(1000, base_end)}, {"pro": base_end})
    both = {"sub_addon": addon, "sub_pro": trial}
    assert rules.effective(both, NOW) == {
        "api_calls": Effective(1250, base_end, ("sub_addon", "sub_pro")),
        "priority_support": Effective(None, base_end, ("sub_addon",)),
    }
    assert rules.next_expiry(both, NOW) == base_end
    assert rules.effective(both, base_end) == {}
    # A base without end held too: the add-on's own window applies.
    forever = {**both, "pi_pro": SourceGrants({"sso": Grant(None, None)}, {"pro": None})}
    assert rules.effective(forever, base_end)["priority_support"] == Effective(
        None, addon_end, ("sub_addon",)
    )
    assert rules.next_expiry(forever, base_end) == addon_end


def test_diff_names_each_change() -> None:
    a, b = Effective(1, None, ("s",)), Effective(2, None, ("s",))
    assert rules.diff({"x": a, "y": a, "z": a}, {"x": a, "y": b, "w": a}) == [
        ("entitlement.granted", "w", a),
        ("entitlement.updated", "y", b),
        ("entitlement.revoked", "z", None),
    ]


def test_mark_order_time_then_rank_then_event_id() -> None:
    t = NOW
    created = Mark.of("subscription.activated", t, "evt_z")
    updated = Mark.of("subscription.updated", t, "evt_a")
    updated_b = Mark.of("subscription.updated", t, "evt_b")
    paused = Mark.of("subscription.paused", t, "evt_a")
    canceled = Mark.of("subscription.canceled", t, "evt_0")
    later_created = Mark.of("subscription.activated", t + timedelta(seconds=1), "evt_0")
    assert created < updated < updated_b < paused < canceled < later_created
    # A refund in the same second as its purchase wins.
    assert Mark.of("payment.succeeded", t, "evt_z") < Mark.of("payment.refunded", t, "evt_a")
    assert Mark.of("checkout.completed", t, "evt_z") < Mark.of("payment.refunded", t, "evt_a")


def test_past_due_start_does_not_depend_on_event_order() -> None:
    def mark(second: int) -> Mark:
        return Mark(NOW + timedelta(seconds=second), 1, f"evt_{second:03}")

    history = [
        (mark(1), False),
        (mark(2), True),
        (mark(3), True),
        (mark(4), False),
        (mark(5), True),
    ]
    results = set()
    for order in (
        history,
        history[::-1],
        [history[2], history[4], history[0], history[3], history[1]],
    ):
        track = PastDueTrack()
        for m, past_due in order:
            track = track.observe(m, past_due=past_due)
        results.add(track)
    assert len(results) == 1
    assert results.pop().since == mark(5).at
    track = PastDueTrack()
    for m, past_due in history[:3][::-1]:
        track = track.observe(m, past_due=past_due)
    assert track.since == mark(2).at
    assert PastDueTrack.from_json(track.to_json()) == track
