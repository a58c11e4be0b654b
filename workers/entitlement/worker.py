"""Entry point of the entitlement worker: ``build(settings) -> WorkerSpec`` (its
declaration, ``declaration.py``, names it)."""

from __future__ import annotations

from datetime import timedelta

from contracts import BILLING_EVENTS
from workers.entitlement.catalog import load_catalog
from workers.entitlement.declaration import DECLARATION
from workers.entitlement.handler import EntitlementHandler
from workers.entitlement.settings import EntitlementSettings
from workers.runtime.spec import Subscription, WorkerSpec

NAME = DECLARATION.name
EXPIRY_INTERVAL_SECONDS = 30.0


def build(settings: EntitlementSettings) -> WorkerSpec:
    """Load the catalog (a broken one raises ``CatalogError`` here, at startup; ``dev``
    calls this again when the file changes)."""
    handler = EntitlementHandler(
        load_catalog(settings.entitlement_catalog_path),
        past_due_grace=timedelta(days=settings.entitlement_past_due_grace_days),
    )
    return WorkerSpec(
        name=NAME,
        subscriptions=(
            Subscription(BILLING_EVENTS, handler.handle, handle_batch=handler.handle_batch),
        ),
        periodic=handler.expire,
        periodic_interval_seconds=EXPIRY_INTERVAL_SECONDS,
        emits=DECLARATION.emits,
        watch_files=(settings.entitlement_catalog_path,),
    )
