"""The invoice worker's ledger for the read API tests: its migrations, and rows written
with SQL into its tables (only the columns the read views show, the worker's bookkeeping
filled with placeholders), since the tests read the ledger, not the worker."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from billing_fleet.migrate import migrate
from workers.registry import migration_packages

INVOICE_MIGRATIONS = "workers.invoice"
# A minimal valid PDF (header, one empty page, trailer): stored bytes, returned as they are.
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 10 10]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def ledger_migrations() -> tuple[str, ...]:
    """The registry's packages, the invoice worker's among them (it is registered; added
    here should a registry without it run these tests)."""
    packages = migration_packages()
    return packages if INVOICE_MIGRATIONS in packages else (*packages, INVOICE_MIGRATIONS)


async def migrate_ledger(url: str) -> None:
    await migrate(url, ledger_migrations())


def at(minutes: float) -> datetime:
    """A time ``minutes`` after ``T0``."""
    return T0 + timedelta(minutes=minutes)


def _bookkeeping(created_at: datetime) -> dict[str, Any]:
    return {"status_rank": 0, "event_at": created_at, "event_rank": 0, "event_id": "evt_seed"}


def invoice(
    invoice_id: str, customer_id: str | None, created_at: datetime, **fields: Any
) -> dict[str, Any]:
    lines = fields.pop("lines", [])
    return {
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "livemode": False,
        "status": "paid",
        "currency": "eur",
        "subtotal": 1000,
        "tax": 190,
        "total": 1190,
        "amount_due": 1190,
        "amount_paid": 1190,
        "amount_remaining": 0,
        "lines": json.dumps(lines),
        "created_at": created_at,
        **_bookkeeping(created_at),
        **fields,
    }


def payment(
    payment_id: str, customer_id: str | None, created_at: datetime, **fields: Any
) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "customer_id": customer_id,
        "livemode": False,
        "payment_intent_id": payment_id,
        "charge_id": f"ch_{payment_id}",
        "status": "succeeded",
        "amount": 2500,
        "currency": "usd",
        "created_at": created_at,
        **_bookkeeping(created_at),
        **fields,
    }


def refund(refund_id: str, payment_id: str, created_at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "refund_id": refund_id,
        "payment_id": payment_id,
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "reason": "requested_by_customer",
        "created_at": created_at,
        **_bookkeeping(created_at),
        **fields,
    }


def dispute(
    dispute_id: str, payment_id: str, created_at: datetime, **fields: Any
) -> dict[str, Any]:
    return {
        "dispute_id": dispute_id,
        "payment_id": payment_id,
        "amount": 2500,
        "currency": "usd",
        "status": "needs_response",
        "reason": "fraudulent",
        "amount_withdrawn": 2500,
        "evidence_due_by": created_at + timedelta(days=7),
        "created_at": created_at,
        **_bookkeeping(created_at),
        **fields,
    }


def subscription(
    subscription_id: str, customer_id: str, created_at: datetime, **fields: Any
) -> dict[str, Any]:
    items = fields.pop(
        "items", [{"price_id": "price_pro", "product_id": "prod_pro", "quantity": 1}]
    )
    return {
        "subscription_id": subscription_id,
        "customer_id": customer_id,
        "livemode": False,
        "status": "active",
        "items": json.dumps(items),
        "price_id": items[0]["price_id"] if items else None,
        "product_id": items[0]["product_id"] if items else None,
        "quantity": items[0]["quantity"] if items else None,
        "current_period_start": created_at,
        "current_period_end": created_at + timedelta(days=30),
        "created_at": created_at,
        **_bookkeeping(created_at),
        **fields,
    }


def receipt_number() -> str:
    """A number of the worker's form, under a prefix of its own (numbers are unique per
    prefix and year, and the tests share a database)."""
    return f"R{secrets.token_hex(4)}-TEST-2030-000001"


def receipt(number: str, payment_id: str, customer_id: str | None, **fields: Any) -> dict[str, Any]:
    prefix, year, sequence = number.split("-")[0], 2030, int(number.rsplit("-", 1)[1])
    return {
        "number": number,
        "account": "",
        "livemode": False,
        "prefix": prefix,
        "year": year,
        "sequence": sequence,
        "payment_id": payment_id,
        "customer_id": customer_id,
        "amount": 2500,
        "currency": "usd",
        "paid_at": T0,
        **fields,
    }


async def insert(conn: asyncpg.Connection, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` into one of the ledger's tables (rows naming the same columns together)."""
    by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(row), []).append(tuple(row.values()))
    for columns, values in by_columns.items():
        placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", values
        )


async def seed(
    url: str,
    *,
    users: Mapping[str, str | None] | None = None,
    invoices: Sequence[Mapping[str, Any]] = (),
    payments: Sequence[Mapping[str, Any]] = (),
    refunds: Sequence[Mapping[str, Any]] = (),
    disputes: Sequence[Mapping[str, Any]] = (),
    subscriptions: Sequence[Mapping[str, Any]] = (),
    receipts: Sequence[Mapping[str, Any]] = (),
    pdfs: Mapping[str, bytes] | None = None,
) -> None:
    """Ledger rows on the database at ``url``; ``users``: customer id -> user id,
    ``pdfs``: receipt number -> the rendered document."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            customers = [{"customer_id": c, "user_id": u} for c, u in (users or {}).items()]
            await insert(conn, "ledger_customers", customers)
            await insert(conn, "ledger_invoices", invoices)
            await insert(conn, "ledger_payments", payments)
            await insert(conn, "ledger_refunds", refunds)
            await insert(conn, "ledger_disputes", disputes)
            await insert(conn, "ledger_subscriptions", subscriptions)
            await insert(conn, "ledger_receipts", receipts)
            documents = [{"number": n, "pdf": pdf} for n, pdf in (pdfs or {}).items()]
            await insert(conn, "ledger_receipt_documents", documents)
    finally:
        await conn.close()
