"""The ``receipt_pdf`` channel: render a receipt's PDF and store it, outside any event
transaction.

The invoice worker's handler returns, in the transaction that issues receipt ``number``,
``Delivery("receipt_pdf", "receipt-documents", f"receipt-pdf:{number}", number.encode(),
metadata={"number": number})``; the runtime's dispatcher claims it afterwards and calls
``send``, which reads the receipt from the worker's tables (its own small pool, every
statement bounded), renders HTML and then the PDF (``pdf.PdfRenderer``), and inserts it
``ON CONFLICT DO NOTHING``. A receipt whose PDF is stored already is not rendered again;
two sends racing store one PDF.

Outcomes: PostgreSQL down or stalled, the render's time limit or a render process that
died: ``retry``. No such receipt, no number in the delivery, a template or weasyprint
error: ``failed`` with the reason (a broken template is refused at startup anyway:
``render.check_templates``).

A receipt whose payment names an invoice the ledger does not hold yet (the payment's
events came before the invoice's) is a ``retry`` too, so the PDF shows Stripe's invoice
number and lines once they come; but only for ``invoice_wait`` seconds after it was issued
(15 minutes: an invoice's events normally follow within seconds). After that it is
rendered without them, with the payment's description instead: a PDF is never stored
twice, so a later invoice does not change it, but a receipt must not go without its
document because an invoice event never came (an endpoint not subscribed to invoices, a
dead-lettered event). The wait must end before the policy's last attempt (checked when
the sender is made), so such a row is never dead for want of its invoice.
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncpg

from billing_fleet.db import DATABASE_UNAVAILABLE, bounded_connection, close_pool, create_pool
from billing_fleet.logs import one_line
from workers.invoice.documents.delivery import number_of
from workers.invoice.documents.pdf import PdfRenderer, RenderFailed, RenderUnavailable
from workers.invoice.documents.render import ReceiptRenderer
from workers.invoice.documents.store import load_receipt, store_pdf
from workers.invoice.settings import InvoiceSettings
from workers.runtime.deliveries.model import DETAIL_CHARS, Delivery, RetryPolicy, SendResult
from workers.runtime.failures import retry_delay

DB_TIMEOUT_SECONDS: Final = 5.0
RENDER_TIMEOUT_SECONDS: Final = 20.0
POOL_SIZE: Final = 4
"""Connections of the sender's pool: each send holds one for a read, then for a write,
never across the render."""
POLICY: Final = RetryPolicy((1.0, 5.0, 30.0, 120.0, 600.0), 10)
"""As the HTTP channel's defaults: about 40 minutes of PostgreSQL outage before a
receipt's row is dead (``billing-fleet deliveries retry`` sends it again)."""
INVOICE_WAIT_SECONDS: Final = 900.0
"""How long after its issue a receipt waits for the invoice its payment names."""
JITTER_SPREAD: Final = 0.2
"""The dispatcher's waits are ± this much (``failures.jitter``'s default)."""


class ReceiptDocumentSender:
    """Renders and stores receipt PDFs (the runtime's ``Sender`` protocol)."""

    def __init__(
        self,
        settings: InvoiceSettings,
        *,
        db_timeout: float = DB_TIMEOUT_SECONDS,
        render_timeout: float = RENDER_TIMEOUT_SECONDS,
        policy: RetryPolicy = POLICY,
        invoice_wait: float = INVOICE_WAIT_SECONDS,
    ) -> None:
        if invoice_wait >= last_attempt_after(policy):
            raise ValueError(
                f"the invoice wait ({invoice_wait:g} s) must end before the policy's last "
                f"attempt (at {last_attempt_after(policy):g} s at the earliest)"
            )
        self._url = settings.database_url
        self._db_timeout, self._policy = db_timeout, policy
        self._invoice_wait = invoice_wait
        self._renderer = ReceiptRenderer(settings)
        self._pdf = PdfRenderer(settings.invoice_render_processes, render_timeout)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # A read, a render (waiting for a process included), a write, and slack.
        self._timeout = 2 * db_timeout + render_timeout + 5.0

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    async def send(self, delivery: Delivery) -> SendResult:
        number = number_of(delivery)
        if number is None:
            return SendResult("failed", detail="the delivery names no receipt number")
        try:
            pool = await self._connections()
            async with bounded_connection(pool, self._db_timeout) as conn:
                record = await load_receipt(conn, number, self._renderer.seller)
        except DATABASE_UNAVAILABLE as exc:
            return SendResult("retry", detail=_detail("PostgreSQL", exc))
        except ValueError as exc:  # the invoice's stored lines (pydantic's error)
            return SendResult("failed", detail=_detail(f"receipt {number}'s data", exc))
        if record is None:
            return SendResult("failed", detail=f"no receipt {number}"[:DETAIL_CHARS])
        if record.stored:
            return SendResult("sent", detail="stored already")
        if record.missing_invoice_id is not None and record.age_seconds < self._invoice_wait:
            detail = f"invoice {record.missing_invoice_id} not in the ledger yet"
            return SendResult("retry", detail=detail[:DETAIL_CHARS])
        try:
            html = self._renderer.html(record.document)
        except Exception as exc:  # a template or formatting error: the same next time
            return SendResult("failed", detail=_detail("template", exc))
        try:
            pdf = await self._pdf.render(html)
        except RenderUnavailable as exc:
            return SendResult("retry", detail=_detail("render", exc))
        except RenderFailed as exc:
            return SendResult("failed", detail=_detail("render", exc))
        try:
            async with bounded_connection(pool, self._db_timeout) as conn:
                stored = await store_pdf(conn, number, pdf)
        except DATABASE_UNAVAILABLE as exc:
            return SendResult("retry", detail=_detail("PostgreSQL", exc))
        return SendResult("sent", detail=None if stored else "stored already")

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, self._db_timeout)
        await self._pdf.aclose()

    async def _connections(self) -> asyncpg.Pool:
        """The pool, created on the first send. It opens connections as sends acquire
        them (none up front), each within the acquire's deadline."""
        if self._pool is not None:
            return self._pool
        if self._url is None:
            # An outage of configuration: a restart with the URL set sends it.
            raise ConnectionError("BILLING_DATABASE_URL is not set")
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await create_pool(
                    self._url, min_size=0, max_size=POOL_SIZE, connect_timeout=self._db_timeout
                )
            return self._pool


def last_attempt_after(policy: RetryPolicy) -> float:
    """The least time from a delivery's first attempt to its last under ``policy``."""
    waits = (retry_delay(n, policy.backoff_seconds) for n in range(1, policy.max_attempts))
    return sum(waits) * (1 - JITTER_SPREAD)


def _detail(what: str, exc: BaseException) -> str:
    reason = f"{type(exc).__name__}: {one_line(exc)}" if str(exc) else type(exc).__name__
    return f"{what}: {reason}"[:DETAIL_CHARS]
