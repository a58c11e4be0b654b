"""The invoice worker's declaration (cheap to import: no handler)."""

from __future__ import annotations

from contracts import BILLING_EVENTS, INVOICES
from workers.invoice.settings import InvoiceSettings
from workers.runtime.declaration import WorkerDeclaration

DECLARATION = WorkerDeclaration(
    name="invoice",
    factory="workers.invoice.worker:build",
    settings=InvoiceSettings,
    migrations="workers.invoice",
    consumes=(BILLING_EVENTS,),
    emits=(INVOICES,),
)
