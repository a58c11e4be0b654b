"""Entry point of the invoice worker: ``build(settings) -> WorkerSpec`` (its declaration,
``declaration.py``, names it)."""

from __future__ import annotations

from collections.abc import Mapping

from contracts import BILLING_EVENTS
from workers.invoice.declaration import DECLARATION
from workers.invoice.documents.render import check_templates
from workers.invoice.documents.sender import ReceiptDocumentSender
from workers.invoice.handler import InvoiceHandler
from workers.invoice.receipts import DOCUMENT_CHANNEL
from workers.invoice.settings import InvoiceSettings
from workers.runtime.deliveries.channel import Sender
from workers.runtime.spec import Subscription, WorkerSpec

NAME = DECLARATION.name


def build(settings: InvoiceSettings, channels: Mapping[str, Sender] | None = None) -> WorkerSpec:
    """The worker; ``channels`` are its delivery senders by channel name (tests replace
    them), by default the receipt documents' sender.

    Every receipt returns a delivery on ``receipts.DOCUMENT_CHANNEL`` (its PDF), and the
    runtime refuses a delivery on a channel the spec lacks (the event is poison): the
    receipt documents' sender must be among ``channels`` wherever receipts are issued.
    A template that does not compile or render fails here, at startup.
    """
    check_templates(settings)
    if channels is None:
        channels = {DOCUMENT_CHANNEL: ReceiptDocumentSender(settings)}
    handler = InvoiceHandler(receipt_prefix=settings.invoice_receipt_prefix)
    return WorkerSpec(
        name=NAME,
        subscriptions=(
            Subscription(BILLING_EVENTS, handler.handle, handle_batch=handler.handle_batch),
        ),
        emits=DECLARATION.emits,
        channels=dict(channels or {}),
    )
