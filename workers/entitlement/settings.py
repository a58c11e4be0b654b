"""The entitlement worker's own settings (composed with the runtime's where it runs)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from billing_fleet.settings import CoreSettings


class EntitlementSettings(CoreSettings):
    entitlement_catalog_path: Path = Field(
        default=Path("catalog.example.yaml"),
        description="YAML catalog mapping Stripe prices/products to features.",
    )
    entitlement_past_due_grace_days: float = Field(
        default=3.0, ge=0, description="Days a past_due subscription keeps its access."
    )
