"""The entitlement catalog: which Stripe prices/products grant which features.

The catalog is a YAML file (``BILLING_ENTITLEMENT_CATALOG_PATH``; see
``catalog.example.yaml`` for a documented example)::

    products:
      pro:                                   # entry name, referenced by add-ons
        prices: [price_1Pro]                 # matched by price id (or legacy plan id),
        lookup_keys: [pro_monthly]           #   by price lookup key,
        products: [prod_Pro]                 #   or by product id
        features:
          sso: true                          # boolean feature
          api_calls: 10000                   # numeric limit
          storage_gb: {limit: 5, per_seat: true}   # limit x subscription item quantity
      extra_calls:
        products: [prod_ExtraCalls]
        addon_for: [pro]                     # grants only while the customer holds `pro`
        features: {api_calls: 5000}          # added to the base's limit
      calls_pack:
        lookup_keys: [calls_pack]
        addon_for: [pro]
        one_off: true                        # this add-on may also be bought one-off
        duration_days: 30
        features: {api_calls: 2000}
      lifetime_pack:
        lookup_keys: [lifetime_pack]
        duration_days: null                  # one-off purchase: null = lifetime
        features: {export: true}

A broken catalog raises ``CatalogError`` naming the file and the offending key, so the
worker refuses to start rather than granting the wrong things.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.events import BIGINT_MAX

__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "FeatureSpec",
    "load_catalog",
    "parse_catalog",
    "parse_metadata_features",
]

_FEATURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")


class CatalogError(ValueError):
    """The catalog file is missing, not YAML, or does not describe a valid catalog."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureSpec(_Model):
    """What one feature grants: a boolean (``limit`` None) or a numeric limit."""

    limit: int | None = Field(default=None, ge=0, le=BIGINT_MAX)
    per_seat: bool = Field(
        default=False, description="Multiply the limit by the item's quantity (seats)."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        # `feature: true` and `feature: 1000` are the short forms.
        if value is True:
            return {}
        if value is False:
            raise ValueError("false grants nothing: leave the feature out instead")
        if isinstance(value, int):
            return {"limit": value}
        return value

    @model_validator(mode="after")
    def _per_seat_needs_limit(self) -> FeatureSpec:
        if self.per_seat and self.limit is None:
            raise ValueError("per_seat needs a numeric limit")
        return self

    def amount(self, quantity: int) -> int | None:
        """The limit this feature grants for ``quantity`` units (None: boolean/unlimited);
        a per-seat product saturates at PostgreSQL's bigint, the column's type."""
        if self.limit is None:
            return None
        return min(self.limit * quantity, BIGINT_MAX) if self.per_seat else self.limit


class CatalogEntry(_Model):
    name: str = ""
    prices: list[str] = Field(default_factory=list)
    lookup_keys: list[str] = Field(default_factory=list)
    products: list[str] = Field(default_factory=list)
    features: dict[str, FeatureSpec] = Field(min_length=1)
    addon_for: list[str] = Field(
        default_factory=list, description="Names of the base entries this add-on extends."
    )
    duration_days: float | None = Field(
        default=None, gt=0, description="One-off purchases: days of access; null = lifetime."
    )
    one_off: bool = Field(
        default=False,
        description="Add-ons only: may also be bought as a one-off purchase (any other entry "
        "may anyway).",
    )

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: dict[str, FeatureSpec]) -> dict[str, FeatureSpec]:
        for name in value:
            if not _FEATURE_NAME.match(name):
                raise ValueError(f"invalid feature name {name!r}")
        return value

    @model_validator(mode="after")
    def _one_off_is_for_addons(self) -> CatalogEntry:
        if self.one_off and not self.addon_for:
            raise ValueError("one_off is for add-ons: any other entry may be bought one-off anyway")
        return self

    @property
    def is_addon(self) -> bool:
        return bool(self.addon_for)


class Catalog(_Model):
    version: int = 1
    products: dict[str, CatalogEntry] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_entries(cls, value: object) -> object:
        if isinstance(value, Mapping) and isinstance(value.get("products"), Mapping):
            products = {
                name: {**entry, "name": name} if isinstance(entry, Mapping) else entry
                for name, entry in value["products"].items()
            }
            return {**value, "products": products}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        seen: dict[tuple[str, str], str] = {}
        for name, entry in self.products.items():
            keys = [
                *(("price", key) for key in entry.prices),
                *(("lookup_key", key) for key in entry.lookup_keys),
                *(("product", key) for key in entry.products),
            ]
            if not keys:
                raise ValueError(f"products.{name}: names no price, lookup key or product")
            for key in keys:
                if key in seen and seen[key] != name:
                    raise ValueError(
                        f"products.{name}: {key[0]} {key[1]!r} is already mapped by "
                        f"products.{seen[key]}"
                    )
                seen[key] = name
            for base in entry.addon_for:
                target = self.products.get(base)
                if target is None:
                    raise ValueError(f"products.{name}.addon_for: unknown entry {base!r}")
                if target.is_addon:
                    raise ValueError(f"products.{name}.addon_for: {base!r} is itself an add-on")
        return self

    def resolve(
        self, *, price_id: str | None, lookup_key: str | None, product_id: str | None
    ) -> CatalogEntry | None:
        """The entry for a price: by price id, then lookup key, then product id."""
        for entry in self.products.values():
            if price_id is not None and price_id in entry.prices:
                return entry
        for entry in self.products.values():
            if lookup_key is not None and lookup_key in entry.lookup_keys:
                return entry
        for entry in self.products.values():
            if product_id is not None and product_id in entry.products:
                return entry
        return None


def parse_catalog(data: Any, *, origin: str = "catalog") -> Catalog:
    """Validate already-parsed YAML; raise ``CatalogError`` with every problem found."""
    if data is None:
        data = {}
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CatalogError(f"{origin}: invalid entitlement catalog: {problems}") from exc


def load_catalog(path: Path) -> Catalog:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the entitlement catalog: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: the entitlement catalog is not valid YAML: {exc}") from exc
    return parse_catalog(data, origin=str(path))


def parse_metadata_features(value: str) -> dict[str, FeatureSpec]:
    """Stripe product metadata ``features``: ``"sso,api_calls=1000"``.

    Each comma-separated part is a feature name (boolean) or ``name=limit``. Raises
    ``ValueError`` on an empty list, a bad name or a limit that is not a whole number.
    """
    features: dict[str, FeatureSpec] = {}
    for raw in value.split(","):
        part = raw.strip()
        if not part:
            continue
        name, sep, limit = (piece.strip() for piece in part.partition("="))
        if not _FEATURE_NAME.match(name):
            raise ValueError(f"invalid feature name {name!r} in {value!r}")
        if sep:
            if not limit.isdigit():
                raise ValueError(f"limit of {name!r} is not a whole number in {value!r}")
            features[name] = FeatureSpec(limit=int(limit))
        else:
            features[name] = FeatureSpec()
    if not features:
        raise ValueError(f"no features in {value!r}")
    return features
