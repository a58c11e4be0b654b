"""Helpers of the receipt document tests: the invoice worker's tables on a fresh database,
receipts inserted with SQL as its handler would leave them, and PDFs read back."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import asyncpg
from pypdf import PdfReader

from billing_fleet.db import json_text
from billing_fleet.migrate import migrate
from contracts import InvoiceLine
from workers.runtime.declaration import RUNTIME_MIGRATIONS

INVOICE_MIGRATIONS: Final = (RUNTIME_MIGRATIONS, "workers.invoice")
PAID_AT: Final = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


async def migrate_invoice_tables(url: str) -> None:
    """The runtime's and the invoice worker's migrations on the database at ``url``."""
    await migrate(url, INVOICE_MIGRATIONS)


@dataclass(frozen=True)
class Invoice:
    number: str | None = "INV-0042"
    lines: tuple[InvoiceLine, ...] = ()
    subtotal: int | None = None
    tax: int | None = None
    customer_email: str | None = None


@dataclass(frozen=True)
class Receipt:
    """One receipt and what it refers to; ``number`` is fresh per instance."""

    amount: int
    currency: str
    description: str | None = None
    card: tuple[str, str] | None = None  # (brand, last4)
    customer: tuple[str | None, str | None] | None = None  # (name, email)
    invoice: Invoice | None = None
    number: str = field(default_factory=lambda: f"T{uuid.uuid4().hex[:8].upper()}-2026-000001")
    customer_on_receipt: bool = True
    """False: issued before its payment's customer was known (the receipt names none)."""
    invoice_id: str | None = None
    """An invoice its payment names that is not in the ledger (``invoice`` None)."""
    issued_at: datetime | None = None
    """None: now (PostgreSQL's clock)."""


def line(description: str, quantity: int, unit_amount: int) -> InvoiceLine:
    return InvoiceLine(
        price_id=f"price_{uuid.uuid4().hex[:8]}",
        product_id="prod_test",
        quantity=quantity,
        amount=quantity * unit_amount,
        description=description,
        unit_amount=unit_amount,
    )


_INSERT_INVOICE: Final = """
INSERT INTO ledger_invoices (invoice_id, customer_id, livemode, number, status, currency,
    subtotal, tax, total, amount_due, amount_paid, amount_remaining, customer_email, lines,
    created_at, status_rank, event_at, event_rank, event_id)
VALUES ($1, $2, false, $3, 'paid', $4, $5, $6, $7, $7, $7, 0, $8, $9::text::jsonb, $10, 3,
    $10, 0, $11)
"""


async def _insert_invoice(
    conn: asyncpg.Connection,
    invoice_id: str,
    customer_id: str | None,
    invoice: Invoice,
    currency: str,
    total: int,
) -> None:
    await conn.execute(
        _INSERT_INVOICE,
        invoice_id,
        customer_id,
        invoice.number,
        currency,
        invoice.subtotal,
        invoice.tax,
        total,
        invoice.customer_email,
        json_text([item.model_dump(mode="json") for item in invoice.lines]),
        PAID_AT,
        f"evt_{invoice_id}",
    )


async def insert_invoice(url: str, invoice_id: str, number: str, *lines: InvoiceLine) -> None:
    """An invoice (in euros, its total the lines') arriving after the receipt of its
    payment (``Receipt.invoice_id``)."""
    conn = await asyncpg.connect(url)
    try:
        invoice = Invoice(number, lines)
        await _insert_invoice(conn, invoice_id, None, invoice, "eur", sum(x.amount for x in lines))
    finally:
        await conn.close()


async def insert_receipt(url: str, receipt: Receipt) -> str:
    """Insert ``receipt`` with its payment, customer and invoice; returns its number."""
    key = uuid.uuid4().hex[:12]
    payment_id, customer_id, invoice_id = f"pi_{key}", f"cus_{key}", f"in_{key}"
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            if receipt.customer is not None:
                await conn.execute(
                    "INSERT INTO ledger_customers (customer_id, name, email) VALUES ($1, $2, $3)",
                    customer_id,
                    *receipt.customer,
                )
            if receipt.invoice is not None:
                await _insert_invoice(
                    conn, invoice_id, customer_id, receipt.invoice, receipt.currency, receipt.amount
                )
            brand, last4 = receipt.card or (None, None)
            await conn.execute(
                """
                INSERT INTO ledger_payments (payment_id, customer_id, livemode,
                    payment_intent_id, invoice_id, status, amount, currency,
                    payment_method_type, card_brand, card_last4, description, created_at,
                    succeeded_at, status_rank, event_at, event_rank, event_id)
                VALUES ($1, $2, false, $1, $3, 'succeeded', $4, $5, $6, $7, $8, $9, $10,
                    $10, 3, $10, 0, $11)
                """,
                payment_id,
                customer_id,
                invoice_id if receipt.invoice is not None else receipt.invoice_id,
                receipt.amount,
                receipt.currency,
                "card" if receipt.card else None,
                brand,
                last4,
                receipt.description,
                PAID_AT,
                f"evt_pi_{key}",
            )
            prefix = receipt.number.split("-", 1)[0]
            await conn.execute(
                """
                INSERT INTO ledger_receipts (number, account, livemode, prefix, year,
                    sequence, payment_id, customer_id, amount, currency, paid_at, issued_at)
                VALUES ($1, '', false, $2, 2026, 1, $3, $4, $5, $6, $7, coalesce($8, now()))
                """,
                receipt.number,
                prefix,
                payment_id,
                customer_id if receipt.customer_on_receipt else None,
                receipt.amount,
                receipt.currency,
                PAID_AT,
                receipt.issued_at,
            )
    finally:
        await conn.close()
    return receipt.number


async def stored_documents(url: str, number: str) -> list[asyncpg.Record]:
    """The ``ledger_receipt_documents`` rows of ``number`` (at most one)."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(
            "SELECT number, pdf, rendered_at FROM ledger_receipt_documents WHERE number = $1",
            number,
        )
    finally:
        await conn.close()


def pdf_text(pdf: bytes) -> str:
    """The text of every page of ``pdf``, with runs of whitespace as one space."""
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
