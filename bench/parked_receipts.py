"""The invoice worker with its receipt documents parked, for ``bench worker --worker invoice``.

``BILLING_WORKER_DECLARATION=bench.parked_receipts:DECLARATION billing-fleet worker invoice``
runs the registry's invoice worker (its handler, the runtime, the outbox relay and the
deliveries dispatcher, its settings) with one change: its ``receipt_pdf`` channel answers
each delivery "retry in an hour" instead of rendering the PDF. After its first claim the
dispatcher cools that destination for the hour (and pushes its other due rows back), so
no render (about 0.3 s of a core per receipt, ``bench receipts``) competes for the cores
with the ledger writes the benchmark measures. The delivery rows are still written in the
events' transactions, as the raw ceiling writes them.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from workers.invoice import worker
from workers.invoice.declaration import DECLARATION as INVOICE
from workers.invoice.receipts import DOCUMENT_CHANNEL
from workers.invoice.settings import InvoiceSettings
from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult
from workers.runtime.spec import WorkerSpec

PARK_SECONDS: Final = 3600.0


class ParkedDocuments:
    """A ``receipt_pdf`` sender that renders nothing: every attempt is a retry an hour on."""

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy((PARK_SECONDS,), 10)

    @property
    def timeout_seconds(self) -> float:
        return 5.0

    async def send(self, delivery: Delivery) -> SendResult:
        return SendResult("retry", detail="parked by the benchmark", retry_after=PARK_SECONDS)

    async def aclose(self) -> None:
        return None


def build(settings: InvoiceSettings) -> WorkerSpec:
    return worker.build(settings, channels={DOCUMENT_CHANNEL: ParkedDocuments()})


DECLARATION: Final = dataclasses.replace(INVOICE, factory="bench.parked_receipts:build")
