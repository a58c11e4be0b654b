"""The ledger read API's SQL: one indexed query per request, over the invoice worker's views.

As for entitlements (``access_store.py``), the gateway reads only the views of the
worker's read contract (``READ_VIEWS``, created by
``workers/invoice/migrations/0002_read_views.sql``), never its tables. The views inline:

- a customer's page is one index scan on ``(customer_id, created_at DESC, id DESC)``,
  bounded by the keyset condition ``(created_at, id) < (…)`` and ``created_at >= …``
  (both index conditions), stopping after ``limit`` rows;
- a user's page runs that scan once per customer of the user (``LATERAL``, each at most
  ``limit`` rows) and merges them: a user has one customer or a few;
- one record is a primary-key lookup, the owner checked in the same query.

Every query returns the rows of the JSON answer as they are (the SQL names the columns
as the API does); jsonb columns arrive as text and are parsed here. An invoice comes as
its ``document``, the JSON the worker's trigger keeps of it, answered as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple

import asyncpg
from pydantic_core import from_json, to_json

from api_gateway.pagination import ListQuery
from billing_fleet.db import BoundedPool

CUSTOMERS_VIEW: Final = "read_v1_ledger_customers"
INVOICES_VIEW: Final = "read_v1_invoices"
PAYMENTS_VIEW: Final = "read_v1_payments"
SUBSCRIPTIONS_VIEW: Final = "read_v1_subscriptions"
RECEIPTS_VIEW: Final = "read_v1_receipts"
RECEIPT_DOCUMENTS_VIEW: Final = "read_v1_receipt_documents"
READ_VIEWS: Final = frozenset(
    {
        CUSTOMERS_VIEW,
        INVOICES_VIEW,
        PAYMENTS_VIEW,
        SUBSCRIPTIONS_VIEW,
        RECEIPTS_VIEW,
        RECEIPT_DOCUMENTS_VIEW,
    }
)

OwnerKind = Literal["user", "customer"]


class Owner(NamedTuple):
    """Whose records a request reads: a user's (every Stripe customer mapped to the
    user) or one customer's (a service with the ledger scope)."""

    kind: OwnerKind
    id: str


def _owned(kind: OwnerKind, param: str) -> str:
    """The condition that row ``t`` belongs to the owner in ``param``."""
    if kind == "customer":
        return f"t.customer_id = {param}"
    users_customers = f"SELECT c.customer_id FROM {CUSTOMERS_VIEW} c WHERE c.user_id = {param}"
    return f"t.customer_id IN ({users_customers})"


# -- the rows ------------------------------------------------------------------------------

_ACCOUNT = "nullif(t.account, '') AS account"  # '' is the platform's own: null in the API
# The position (the list's order, the cursor's) and the invoice's JSON as stored.
_INVOICE = "t.invoice_id AS id, t.created_at, t.document"
_PAYMENT = f"""t.payment_id AS id, t.customer_id, {_ACCOUNT}, t.livemode, t.payment_intent_id,
t.charge_id, t.invoice_id, t.status, t.amount, t.amount_captured, t.amount_refunded,
t.currency, t.failure_code, t.failure_message, t.payment_method_type, t.card_brand,
t.card_last4, t.description, t.receipt_number, t.refunds, t.disputes, t.created_at,
t.succeeded_at, t.updated_at"""
_SUBSCRIPTION = f"""t.subscription_id AS id, t.customer_id, {_ACCOUNT}, t.livemode, t.status,
t.items, t.price_id, t.product_id, t.quantity, t.current_period_start, t.current_period_end,
t.cancel_at_period_end, t.cancel_at, t.canceled_at, t.trial_start, t.trial_end, t.created_at,
t.updated_at"""
_RECEIPT = f"""t.number, t.customer_id, {_ACCOUNT}, t.payment_id, t.invoice_id, t.invoice_number,
t.amount, t.currency, t.amount_refunded, t.payment_method_type, t.card_brand, t.card_last4,
t.description, t.paid_at, t.issued_at, t.pdf_ready"""
# Timestamps PostgreSQL wrote into jsonb (in the session's time zone): as the others, UTC.
_NESTED_TIMES = ("created_at", "evidence_due_by")


def _nested(text: str) -> list[dict[str, Any]]:
    """A jsonb array of refunds or disputes, its timestamps as datetimes."""
    if text == "[]":  # most payments: nothing to parse
        return []
    items: list[dict[str, Any]] = from_json(text)
    for item in items:
        for key in _NESTED_TIMES:
            if item.get(key) is not None:
                item[key] = datetime.fromisoformat(item[key]).astimezone(UTC)
    return items


def _document(record: asyncpg.Record) -> bytes:
    document: str = record["document"]
    return document.encode()


def _payment(record: asyncpg.Record) -> bytes:
    row = dict(record)
    row["refunds"], row["disputes"] = _nested(row["refunds"]), _nested(row["disputes"])
    return to_json(row)


def _subscription(record: asyncpg.Record) -> bytes:
    row = dict(record)
    row["items"] = from_json(row["items"])
    return to_json(row)


# -- lists ---------------------------------------------------------------------------------

# $1 owner, ($2, $3) the exclusive upper bound (None: none), $4 created_at lower bound,
# $5 status, $6 rows to fetch. coalesce keeps one statement (and plan) for every filter
# combination while the bounds stay index conditions.
_PAGE_FILTERS = """(t.created_at, t.{key})
      < (coalesce($2::timestamptz, 'infinity'), coalesce($3::text, ''))
  AND t.created_at >= coalesce($4::timestamptz, '-infinity')
  AND ($5::text IS NULL OR t.status = $5)
ORDER BY t.created_at DESC, t.{key} DESC
LIMIT $6"""


def _page_sql(view: str, key: str, columns: str, kind: OwnerKind) -> str:
    filters = _PAGE_FILTERS.format(key=key)
    if kind == "customer":
        return f"SELECT {columns}\nFROM {view} t\nWHERE t.customer_id = $1\n  AND {filters}"
    return f"""SELECT p.* FROM {CUSTOMERS_VIEW} c
CROSS JOIN LATERAL (
  SELECT {columns}
  FROM {view} t
  WHERE t.customer_id = c.customer_id
    AND {filters}
) p
WHERE c.user_id = $1
ORDER BY p.created_at DESC, p.id DESC
LIMIT $6"""


class Listed(NamedTuple):
    """One row of a page: its position in the list's order, and its JSON."""

    created_at: datetime
    id: str
    json: bytes


@dataclass(frozen=True, slots=True)
class Listing:
    """One paged list of the API: its path segment, its SQL per owner, its rows' JSON."""

    name: str
    sql: dict[OwnerKind, str]
    row: Callable[[asyncpg.Record], bytes]

    @classmethod
    def of(
        cls,
        name: str,
        view: str,
        key: str,
        columns: str,
        row: Callable[[asyncpg.Record], bytes],
    ) -> Listing:
        sql: dict[OwnerKind, str] = {
            kind: _page_sql(view, key, columns, kind) for kind in ("user", "customer")
        }
        return cls(name, sql, row)


INVOICES = Listing.of("invoices", INVOICES_VIEW, "invoice_id", _INVOICE, _document)
PAYMENTS = Listing.of("payments", PAYMENTS_VIEW, "payment_id", _PAYMENT, _payment)
SUBSCRIPTIONS = Listing.of(
    "subscriptions", SUBSCRIPTIONS_VIEW, "subscription_id", _SUBSCRIPTION, _subscription
)
LISTINGS: Final = {listing.name: listing for listing in (INVOICES, PAYMENTS, SUBSCRIPTIONS)}


async def page(pool: BoundedPool, listing: Listing, owner: Owner, query: ListQuery) -> list[Listed]:
    """Up to ``query.limit + 1`` rows, newest first (one more than a page: whether a next
    page exists)."""
    before = query.before()
    rows = await pool.fetch(
        listing.sql[owner.kind],
        owner.id,
        before.created_at if before else None,
        before.id if before else None,
        query.created_gte,
        query.status,
        query.limit + 1,
    )
    return [Listed(record["created_at"], record["id"], listing.row(record)) for record in rows]


# -- single records ------------------------------------------------------------------------


def _by_key(kind: OwnerKind) -> dict[str, str]:
    return {
        "invoice": f"SELECT t.document, t.lines\nFROM {INVOICES_VIEW} t\n"
        f"WHERE t.invoice_id = $1 AND {_owned(kind, '$2')}",
        "receipt": f"SELECT {_RECEIPT}\nFROM {RECEIPTS_VIEW} t\n"
        f"WHERE t.number = $1 AND {_owned(kind, '$2')}",
        # No row: no such receipt (of the owner's); a row without pdf: not rendered yet.
        "receipt_pdf": f"SELECT d.pdf\nFROM {RECEIPTS_VIEW} t\n"
        f"LEFT JOIN {RECEIPT_DOCUMENTS_VIEW} d ON d.number = t.number\n"
        f"WHERE t.number = $1 AND {_owned(kind, '$2')}",
    }


_ONE: Final[dict[OwnerKind, dict[str, str]]] = {
    "user": _by_key("user"),
    "customer": _by_key("customer"),
}
QUERIES: Final = (
    *(sql for listing in LISTINGS.values() for sql in listing.sql.values()),
    *(sql for by_kind in _ONE.values() for sql in by_kind.values()),
)


async def invoice(pool: BoundedPool, owner: Owner, invoice_id: str) -> bytes | None:
    """The invoice's JSON with its lines (the stored document, the lines appended as its
    last member); None when there is none of the owner's by that id."""
    rows = await pool.fetch(_ONE[owner.kind]["invoice"], invoice_id, owner.id)
    if not rows:
        return None
    document, lines = rows[0]["document"], rows[0]["lines"]
    return f'{document.removesuffix("}")}, "lines" : {lines}}}'.encode()


async def receipt(pool: BoundedPool, owner: Owner, number: str) -> dict[str, Any] | None:
    rows = await pool.fetch(_ONE[owner.kind]["receipt"], number, owner.id)
    return dict(rows[0]) if rows else None


class ReceiptPdf(NamedTuple):
    pdf: bytes | None  # None: the receipt exists, its PDF is not rendered yet


async def receipt_pdf(pool: BoundedPool, owner: Owner, number: str) -> ReceiptPdf | None:
    """The stored PDF; None when there is no receipt of the owner's by that number."""
    rows = await pool.fetch(_ONE[owner.kind]["receipt_pdf"], number, owner.id)
    return ReceiptPdf(rows[0]["pdf"]) if rows else None
