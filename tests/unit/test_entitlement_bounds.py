"""Limits saturate at PostgreSQL's bigint (the ``entitlements.limit`` column): a per-seat
product or a sum of add-ons past it would leave the event unappliable; the catalog refuses
a limit above it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.events import BIGINT_MAX, QUANTITY_MAX
from tests.entitlement_support import at, item, subscription
from workers.entitlement import rules
from workers.entitlement.catalog import CatalogError, FeatureSpec, parse_catalog

CATALOG = parse_catalog(
    {
        "products": {
            "base": {"prices": ["price_base"], "features": {"calls": BIGINT_MAX}},
            "seats": {
                "prices": ["price_seats"],
                "features": {"seats": {"limit": 2**40, "per_seat": True}},
            },
            "more": {"prices": ["price_more"], "addon_for": ["base"], "features": {"calls": 5}},
        }
    }
)


def test_a_per_seat_product_saturates() -> None:
    assert FeatureSpec(limit=2**40, per_seat=True).amount(QUANTITY_MAX) == BIGINT_MAX
    assert FeatureSpec(limit=2**20, per_seat=True).amount(3) == 3 * 2**20


def test_a_sum_of_limits_saturates() -> None:
    assert rules.add_limit(BIGINT_MAX, 5) == BIGINT_MAX
    assert rules.add_limit(BIGINT_MAX - 5, 4) == BIGINT_MAX - 1
    assert rules.add_limit(None, 5) is None


def test_a_subscription_at_the_bounds_grants_the_bigint_maximum() -> None:
    sub = subscription(
        [item("price_seats", quantity=QUANTITY_MAX), item("price_base"), item("price_more")]
    )
    granted = rules.subscription_grants(
        sub, CATALOG, past_due_since=None, grace=timedelta(days=3)
    ).features
    assert {name: grant.limit for name, grant in granted.items()} == {
        "seats": BIGINT_MAX,
        "calls": BIGINT_MAX,
    }
    effective = rules.effective({"sub": rules.SourceGrants(granted)}, at("2025-01-01T00:00:00"))
    assert all(value.limit == BIGINT_MAX for value in effective.values())


def test_the_catalog_refuses_a_limit_beyond_bigint() -> None:
    with pytest.raises(CatalogError, match="less than or equal to 9223372036854775807"):
        parse_catalog({"products": {"x": {"prices": ["p"], "features": {"n": BIGINT_MAX + 1}}}})
