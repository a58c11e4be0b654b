"""The notification worker's declaration (cheap to import: no handler, no templates)."""

from __future__ import annotations

from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES
from workers.notification.settings import NotificationSettings
from workers.runtime.declaration import WorkerDeclaration

DECLARATION = WorkerDeclaration(
    name="notification",
    factory="workers.notification.worker:build",
    settings=NotificationSettings,
    migrations="workers.notification",
    # Never reorder: the first topic owns the bare worker name (consumer group, keys).
    consumes=(BILLING_EVENTS, INVOICES, ENTITLEMENT_CHANGES),
    emits=(),
)
