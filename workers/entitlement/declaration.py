"""The entitlement worker's declaration (cheap to import: no handler, no catalog)."""

from __future__ import annotations

from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES
from workers.entitlement.settings import EntitlementSettings
from workers.runtime.declaration import WorkerDeclaration

DECLARATION = WorkerDeclaration(
    name="entitlement",
    factory="workers.entitlement.worker:build",
    settings=EntitlementSettings,
    migrations="workers.entitlement",
    consumes=(BILLING_EVENTS,),
    emits=(ENTITLEMENT_CHANGES,),
)
