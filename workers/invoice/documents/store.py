"""A receipt's data from the invoice worker's tables, and its stored PDF."""

from __future__ import annotations

from typing import NamedTuple

import asyncpg
from pydantic import BaseModel, ConfigDict, TypeAdapter

from workers.invoice.documents.document import LineItem, ReceiptDocument, Seller

# The receipt, its payment (card, description, invoice), the invoice (Stripe's number,
# lines, totals) and the customer (the receipt's, else the payment's, as the read views
# say); whether its PDF is stored already. The payment is written in the receipt's
# transaction, the others may be missing.
RECEIPT_QUERY = """
SELECT r.number, r.amount, r.currency, r.paid_at,
       CASE WHEN i.invoice_id IS NULL THEN p.invoice_id END AS missing_invoice_id,
       extract(epoch FROM now() - r.issued_at)::float8 AS age_seconds,
       p.payment_method_type, p.card_brand, p.card_last4, p.description,
       i.number AS invoice_number, i.lines::text AS lines, i.subtotal, i.discount, i.tax,
       c.name AS customer_name, coalesce(c.email, i.customer_email) AS customer_email,
       EXISTS (SELECT 1 FROM ledger_receipt_documents d WHERE d.number = r.number) AS stored
FROM ledger_receipts r
LEFT JOIN ledger_payments p ON p.payment_id = r.payment_id
LEFT JOIN ledger_invoices i ON i.invoice_id = p.invoice_id
LEFT JOIN ledger_customers c ON c.customer_id = coalesce(r.customer_id, p.customer_id)
WHERE r.number = $1
"""

STORE_PDF = """
INSERT INTO ledger_receipt_documents (number, pdf) VALUES ($1, $2)
ON CONFLICT (number) DO NOTHING
"""


class _Line(BaseModel):
    """The fields of a stored ``contracts.InvoiceLine`` a receipt shows."""

    model_config = ConfigDict(extra="ignore")
    amount: int
    description: str | None = None
    quantity: int | None = None
    unit_amount: int | None = None


_LINES = TypeAdapter(list[_Line])


class ReceiptRecord(NamedTuple):
    document: ReceiptDocument
    stored: bool
    """Its PDF is in ``ledger_receipt_documents`` already."""
    missing_invoice_id: str | None
    """The invoice its payment names when that is not in the ledger (yet)."""
    age_seconds: float
    """Since it was issued (PostgreSQL's clock)."""


async def load_receipt(
    conn: asyncpg.Connection, number: str, seller: Seller
) -> ReceiptRecord | None:
    """Receipt ``number`` as its document shows it; None when there is no such receipt.
    A ``ValueError`` (pydantic's) when the invoice's stored lines are not line objects."""
    row = await conn.fetchrow(RECEIPT_QUERY, number)
    if row is None:
        return None
    lines = _LINES.validate_json(row["lines"]) if row["lines"] else []
    document = ReceiptDocument(
        number=row["number"],
        paid_at=row["paid_at"],
        amount=row["amount"],
        currency=row["currency"],
        seller=seller,
        customer_name=row["customer_name"],
        customer_email=row["customer_email"],
        payment_method_type=row["payment_method_type"],
        card_brand=row["card_brand"],
        card_last4=row["card_last4"],
        invoice_number=row["invoice_number"],
        description=row["description"],
        lines=tuple(
            LineItem(line.amount, line.description, line.quantity, line.unit_amount)
            for line in lines
        ),
        subtotal=row["subtotal"],
        discount=row["discount"],
        tax=row["tax"],
    )
    return ReceiptRecord(document, row["stored"], row["missing_invoice_id"], row["age_seconds"])


async def store_pdf(conn: asyncpg.Connection, number: str, pdf: bytes) -> bool:
    """Store receipt ``number``'s PDF; False when one was stored already (kept as is)."""
    status = await conn.execute(STORE_PDF, number, pdf)
    return bool(status == "INSERT 0 1")
