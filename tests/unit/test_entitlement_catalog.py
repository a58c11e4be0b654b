"""The entitlement catalog: parsing, shorthands, resolution order and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.entitlement_support import make_catalog
from tests.fleet_settings import FleetSettings
from workers.entitlement.catalog import (
    CatalogError,
    FeatureSpec,
    load_catalog,
    parse_catalog,
    parse_metadata_features,
)
from workers.entitlement.worker import build

REPO = Path(__file__).resolve().parents[2]


def test_example_catalog_loads_and_documents_every_form() -> None:
    catalog = load_catalog(REPO / "catalog.example.yaml")
    pro = catalog.products["pro"]
    assert pro.features["sso"] == FeatureSpec(limit=None, per_seat=False)
    assert pro.features["api_calls"] == FeatureSpec(limit=100000)
    assert pro.features["storage_gb"] == FeatureSpec(limit=10, per_seat=True)
    assert catalog.products["extra_api_calls"].addon_for == ["starter", "pro"]
    assert catalog.products["export_pass_30d"].duration_days == 30
    assert catalog.products["lifetime_deal"].duration_days is None


def test_build_loads_the_configured_catalog(tmp_path: Path) -> None:
    spec = build(FleetSettings(entitlement_catalog_path=REPO / "catalog.example.yaml"))
    assert spec.name == "entitlement"
    assert spec.periodic is not None
    assert spec.periodic_interval_seconds > 0


def test_build_refuses_a_broken_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("products:\n  pro:\n    prices: [p]\n    features: {sso: maybe}\n")
    with pytest.raises(CatalogError, match=r"catalog\.yaml.*products\.pro\.features\.sso"):
        build(FleetSettings(entitlement_catalog_path=path))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the entitlement catalog"):
        load_catalog(tmp_path / "nope.yaml")


def test_invalid_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("products: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(path)


def test_resolution_prefers_price_then_lookup_key_then_product() -> None:
    catalog = make_catalog()
    by_price = catalog.resolve(price_id="price_team", lookup_key="pro_monthly", product_id=None)
    by_key = catalog.resolve(price_id="price_x", lookup_key="pro_monthly", product_id="prod_pass")
    by_product = catalog.resolve(price_id="price_x", lookup_key="nope", product_id="prod_pass")
    assert by_price is not None and by_price.name == "team"
    assert by_key is not None and by_key.name == "pro"
    assert by_product is not None and by_product.name == "pass_30d"
    assert catalog.resolve(price_id="price_x", lookup_key=None, product_id=None) is None


def test_per_seat_amount() -> None:
    assert FeatureSpec(limit=10, per_seat=True).amount(3) == 30
    assert FeatureSpec(limit=10).amount(3) == 10
    assert FeatureSpec().amount(3) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"products": {"a": {"features": {"x": True}}}}, "names no price, lookup key or product"),
        ({"products": {"a": {"prices": ["p"], "features": {}}}}, "features"),
        ({"products": {"a": {"prices": ["p"], "features": {"x": False}}}}, "leave the feature out"),
        (
            {"products": {"a": {"prices": ["p"], "features": {"x": {"per_seat": True}}}}},
            "per_seat needs a numeric limit",
        ),
        ({"products": {"a": {"prices": ["p"], "features": {"x": -1}}}}, "greater than or equal"),
        (
            {"products": {"a": {"prices": ["p"], "features": {"x": True}, "colour": "red"}}},
            "colour: Extra inputs are not permitted",
        ),
        (
            {
                "products": {
                    "a": {"prices": ["p"], "features": {"x": True}},
                    "b": {"prices": ["p"], "features": {"y": True}},
                }
            },
            "price 'p' is already mapped by products.a",
        ),
        (
            {"products": {"a": {"prices": ["p"], "features": {"x": 1}, "addon_for": ["zz"]}}},
            "unknown entry 'zz'",
        ),
        (
            {
                "products": {
                    "base": {"prices": ["b"], "features": {"x": 1}},
                    "a1": {"prices": ["p"], "features": {"x": 1}, "addon_for": ["base"]},
                    "a2": {"prices": ["q"], "features": {"x": 1}, "addon_for": ["a1"]},
                }
            },
            "'a1' is itself an add-on",
        ),
        (
            {"products": {"a": {"prices": ["p"], "features": {"x": 1}, "one_off": True}}},
            "one_off is for add-ons",
        ),
        ({"products": {"a": {"prices": ["p"], "features": {"bad name": True}}}}, "invalid feature"),
        ({"products": {"a": {"prices": ["p"], "features": {"x": 1}, "duration_days": 0}}}, "0"),
        ({"products": ["not", "a", "mapping"]}, "products"),
    ],
)
def test_invalid_catalogs_are_refused_with_the_reason(data: Any, message: str) -> None:
    with pytest.raises(CatalogError, match="invalid entitlement catalog") as info:
        parse_catalog(data, origin="catalog.yaml")
    assert message in str(info.value)


def test_empty_file_is_an_empty_catalog() -> None:
    assert parse_catalog(yaml.safe_load("")).products == {}


def test_metadata_features() -> None:
    assert parse_metadata_features("sso, api_calls=1000,") == {
        "sso": FeatureSpec(),
        "api_calls": FeatureSpec(limit=1000),
    }


@pytest.mark.parametrize("value", ["", " , ", "api_calls=lots", "a b", "x=-1"])
def test_invalid_metadata_features(value: str) -> None:
    with pytest.raises(ValueError):
        parse_metadata_features(value)
