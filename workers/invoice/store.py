"""SQL of the invoice worker (tables in ``migrations/0001_ledger.sql``).

A batch locks the ids and references its events name (``lock``), ``load``s the rows they
name (``state.Names``) in one query per table (plus one round for what those rows name in
turn: their invoices, customers and receipts), and ``save``s what the handler changed in one
statement per table, its rows in one JSON parameter (as the entitlement worker's store
does: asyncpg's per-element checks of array parameters cost more). Receipt numbers are
taken from ``ledger_receipt_counters`` by ``take_numbers`` in the same transaction.

JSON travels as text and is cast in SQL (``$1::text::json``, ``lines::text``), so the code
works whatever JSON codecs the runtime's pool registers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Final

import asyncpg
from pydantic_core import from_json

from billing_fleet.db import json_text
from contracts import InvoiceLine
from workers.invoice.rows import (
    CustomerRow,
    DisputeRow,
    InvoicePaymentRow,
    InvoiceRow,
    Mark,
    PaymentRow,
    ReceiptRow,
    RefundRow,
    SubscriptionRow,
)
from workers.invoice.state import Ledger, Names

_LINE_FIELDS: Final = tuple(InvoiceLine.model_fields)

# First key of the two-key advisory locks that serialize work on one id ("led").
LOCK_CLASS: Final = 0x6C6564
_MARK: Final = (("status_rank", "int"), ("event_at", "timestamptz"), ("event_rank", "int"),
                ("event_id", "text"))  # fmt: skip

# (column, type) of each table, in its row's field order; the marks' columns last.
_INVOICE: Final = (
    ("invoice_id", "text"), ("customer_id", "text"), ("account", "text"),
    ("livemode", "boolean"), ("number", "text"), ("status", "text"), ("currency", "text"),
    ("subtotal", "bigint"), ("discount", "bigint"), ("tax", "bigint"), ("total", "bigint"),
    ("amount_due", "bigint"), ("amount_paid", "bigint"), ("amount_remaining", "bigint"),
    ("billing_reason", "text"), ("subscription_id", "text"), ("payment_intent_id", "text"),
    ("charge_id", "text"), ("attempt_count", "bigint"),
    ("next_payment_attempt", "timestamptz"), ("due_date", "timestamptz"),
    ("period_start", "timestamptz"), ("period_end", "timestamptz"), ("paid_at", "timestamptz"),
    ("hosted_invoice_url", "text"), ("invoice_pdf", "text"), ("customer_email", "text"),
    ("lines", "jsonb"), ("created_at", "timestamptz"), *_MARK,
)  # fmt: skip
_PAYMENT: Final = (
    ("payment_id", "text"), ("customer_id", "text"), ("account", "text"),
    ("livemode", "boolean"), ("payment_intent_id", "text"), ("charge_id", "text"),
    ("invoice_id", "text"), ("status", "text"), ("amount", "bigint"),
    ("amount_captured", "bigint"), ("amount_refunded", "bigint"), ("currency", "text"),
    ("failure_code", "text"), ("failure_message", "text"), ("payment_method_type", "text"),
    ("card_brand", "text"), ("card_last4", "text"), ("receipt_url", "text"),
    ("description", "text"), ("created_at", "timestamptz"), ("succeeded_at", "timestamptz"),
    *_MARK, ("charge_status_rank", "int"), ("charge_event_at", "timestamptz"),
    ("charge_event_rank", "int"), ("charge_event_id", "text"),
)  # fmt: skip
_REFUND: Final = (
    ("refund_id", "text"), ("payment_id", "text"), ("charge_id", "text"),
    ("payment_intent_id", "text"), ("customer_id", "text"), ("account", "text"),
    ("amount", "bigint"), ("currency", "text"), ("status", "text"), ("reason", "text"),
    ("created_at", "timestamptz"), *_MARK,
)  # fmt: skip
_DISPUTE: Final = (
    ("dispute_id", "text"), ("payment_id", "text"), ("charge_id", "text"),
    ("payment_intent_id", "text"), ("customer_id", "text"), ("account", "text"),
    ("amount", "bigint"), ("currency", "text"), ("reason", "text"), ("status", "text"),
    ("amount_withdrawn", "bigint"), ("amount_reinstated", "bigint"),
    ("evidence_due_by", "timestamptz"), ("created_at", "timestamptz"), *_MARK,
)  # fmt: skip
_SUBSCRIPTION: Final = (
    ("subscription_id", "text"), ("customer_id", "text"), ("account", "text"),
    ("livemode", "boolean"), ("status", "text"), ("items", "jsonb"), ("price_id", "text"),
    ("product_id", "text"), ("quantity", "int"), ("current_period_start", "timestamptz"),
    ("current_period_end", "timestamptz"), ("cancel_at_period_end", "boolean"),
    ("cancel_at", "timestamptz"), ("canceled_at", "timestamptz"),
    ("trial_start", "timestamptz"), ("trial_end", "timestamptz"),
    ("created_at", "timestamptz"), *_MARK,
)  # fmt: skip
_INVOICE_PAYMENT: Final = (
    ("invoice_payment_id", "text"), ("invoice_id", "text"), ("payment_intent_id", "text"),
    ("charge_id", "text"), ("account", "text"), ("amount_paid", "bigint"),
    ("currency", "text"), ("status", "text"), *_MARK,
)  # fmt: skip
_CUSTOMER: Final = (
    ("customer_id", "text"), ("user_id", "text"), ("metadata_user_id", "text"),
    ("email", "text"), ("name", "text"), ("deleted", "boolean"), ("event_at", "timestamptz"),
    ("event_rank", "int"), ("event_id", "text"), ("checkout_user_id", "text"),
    ("checkout_event_at", "timestamptz"), ("checkout_event_id", "text"),
)  # fmt: skip
_RECEIPT: Final = (
    ("number", "text"), ("account", "text"), ("livemode", "boolean"), ("prefix", "text"),
    ("year", "int"),
    ("sequence", "bigint"), ("payment_id", "text"), ("customer_id", "text"),
    ("amount", "bigint"), ("currency", "text"), ("paid_at", "timestamptz"),
    ("issued_at", "timestamptz"),
)  # fmt: skip

Columns = tuple[tuple[str, str], ...]


def _select(columns: Columns) -> str:
    return ", ".join(
        f"{name}::text AS {name}" if kind == "jsonb" else name for name, kind in columns
    )


def _upsert(table: str, columns: Columns, *, update: bool = True) -> str:
    """INSERT of ``$1``'s JSON rows; jsonb columns travel as JSON text inside the row
    (PostgreSQL turns a nested object into jsonb at twice the cost of parsing text)."""
    names = ", ".join(name for name, _ in columns)
    values = ", ".join(f"{name}::jsonb" if kind == "jsonb" else name for name, kind in columns)
    record = ", ".join(f'"{name}" {"text" if kind == "jsonb" else kind}' for name, kind in columns)
    key = columns[0][0]
    sql = (
        f"INSERT INTO {table} ({names}) SELECT {values} "
        f"FROM json_to_recordset($1::text::json) AS t({record})"
    )
    if not update:
        return sql
    assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in columns[1:])
    updated_at = ", updated_at = now()" if table != "ledger_customers" else ""
    return f"{sql} ON CONFLICT ({key}) DO UPDATE SET {assignments}{updated_at}"


# Rows by their own id ($1) or by the payment references they hold ($2).
_BY_REFS = "{key} = ANY($1::text[]) OR {a} = ANY($2::text[]) OR {b} = ANY($2::text[])"
_LOAD_INVOICES = f"SELECT {_select(_INVOICE)} FROM ledger_invoices WHERE " + _BY_REFS.format(
    key="invoice_id", a="payment_intent_id", b="charge_id"
)
_LOAD_PAYMENTS = f"SELECT {_select(_PAYMENT)} FROM ledger_payments WHERE " + _BY_REFS.format(
    key="payment_id", a="payment_intent_id", b="charge_id"
)
_LOAD_REFUNDS = f"SELECT {_select(_REFUND)} FROM ledger_refunds WHERE " + _BY_REFS.format(
    key="refund_id", a="charge_id", b="payment_intent_id"
)
_LOAD_DISPUTES = f"SELECT {_select(_DISPUTE)} FROM ledger_disputes WHERE " + _BY_REFS.format(
    key="dispute_id", a="charge_id", b="payment_intent_id"
)
_LOAD_SUBSCRIPTIONS = (
    f"SELECT {_select(_SUBSCRIPTION)} FROM ledger_subscriptions "
    "WHERE subscription_id = ANY($1::text[])"
)
_LOAD_INVOICES_BY_ID = (
    f"SELECT {_select(_INVOICE)} FROM ledger_invoices WHERE invoice_id = ANY($1::text[])"
)
_LOAD_CUSTOMERS = (
    f"SELECT {_select(_CUSTOMER)} FROM ledger_customers WHERE customer_id = ANY($1::text[])"
)
_LOAD_RECEIPTED = "SELECT payment_id FROM ledger_receipts WHERE payment_id = ANY($1::text[])"
_PAYMENTS_WITH_CHARGES = "SELECT payment_id FROM ledger_payments WHERE charge_id = ANY($1::text[])"
# Links by their own id ($1), their invoice ($2) or the payment references they name ($3).
_LOAD_INVOICE_PAYMENTS = (
    f"SELECT {_select(_INVOICE_PAYMENT)} FROM ledger_invoice_payments "
    "WHERE invoice_payment_id = ANY($1::text[]) OR invoice_id = ANY($2::text[]) "
    "OR payment_intent_id = ANY($3::text[]) OR charge_id = ANY($3::text[])"
)

_PUT_INVOICES = _upsert("ledger_invoices", _INVOICE)
_PUT_PAYMENTS = _upsert("ledger_payments", _PAYMENT)
_PUT_REFUNDS = _upsert("ledger_refunds", _REFUND)
_PUT_DISPUTES = _upsert("ledger_disputes", _DISPUTE)
_PUT_SUBSCRIPTIONS = _upsert("ledger_subscriptions", _SUBSCRIPTION)
_PUT_CUSTOMERS = _upsert("ledger_customers", _CUSTOMER)
_PUT_INVOICE_PAYMENTS = _upsert("ledger_invoice_payments", _INVOICE_PAYMENT)
_PUT_RECEIPTS = _upsert("ledger_receipts", _RECEIPT, update=False)

_TAKE_NUMBERS = """
INSERT INTO ledger_receipt_counters (account, livemode, prefix, year, last_number)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account, livemode, prefix, year)
DO UPDATE SET last_number = ledger_receipt_counters.last_number + EXCLUDED.last_number
RETURNING last_number
"""


# -- locks -----------------------------------------------------------------------------------


async def lock(conn: asyncpg.Connection, keys: Collection[str]) -> None:
    """Serialize all work on these ids (customers, payment references, objects) until the
    transaction ends.

    One statement; the keys are taken in ascending order of their hash (PostgreSQL
    evaluates volatile output expressions after the sort), so two batches never wait for
    each other in a cycle. The receipt counters are locked after these, in key order, and
    nothing waits on an advisory lock after a counter: no cycle there either.
    """
    await conn.execute(
        """
        SELECT pg_advisory_xact_lock($1, k)
        FROM (SELECT DISTINCT hashtext(c) AS k FROM unnest($2::text[]) AS c) AS keys
        ORDER BY k
        """,
        LOCK_CLASS,
        list(keys),
    )


async def payments_with_charges(conn: asyncpg.Connection, charges: Collection[str]) -> set[str]:
    """The ids of the payments whose charge is one of ``charges``, read before locking
    (so a batch can lock the ids of the payments it will find by charge)."""
    return {r["payment_id"] for r in await conn.fetch(_PAYMENTS_WITH_CHARGES, sorted(charges))}


# -- loading ---------------------------------------------------------------------------------


def _mark(record: asyncpg.Record, prefix: str = "", *, status: bool = True) -> Mark | None:
    at = record[f"{prefix}event_at"]
    if at is None:
        return None
    rank = record[f"{prefix}status_rank"] if status else 0
    return Mark(rank, at, record[f"{prefix}event_rank"], record[f"{prefix}event_id"])


def _values(record: asyncpg.Record, count: int) -> list[Any]:
    return [record[i] for i in range(count)]


def invoice_from(record: asyncpg.Record) -> InvoiceRow:
    values = _values(record, len(InvoiceRow._fields) - 1)
    # jsonb orders keys its own way: back in the model's order, so a line loaded compares
    # (and serializes) exactly as one just read from an event.
    values[InvoiceRow._fields.index("lines")] = [
        {name: line.get(name) for name in _LINE_FIELDS} for line in from_json(record["lines"])
    ]
    return InvoiceRow._make([*values, _mark(record)])


def payment_from(record: asyncpg.Record) -> PaymentRow:
    values = _values(record, len(PaymentRow._fields) - 2)
    return PaymentRow._make([*values, _mark(record), _mark(record, "charge_")])


def refund_from(record: asyncpg.Record) -> RefundRow:
    return RefundRow._make([*_values(record, len(RefundRow._fields) - 1), _mark(record)])


def dispute_from(record: asyncpg.Record) -> DisputeRow:
    return DisputeRow._make([*_values(record, len(DisputeRow._fields) - 1), _mark(record)])


def subscription_from(record: asyncpg.Record) -> SubscriptionRow:
    values = _values(record, len(SubscriptionRow._fields) - 1)
    values[SubscriptionRow._fields.index("items")] = from_json(record["items"])
    return SubscriptionRow._make([*values, _mark(record)])


def invoice_payment_from(record: asyncpg.Record) -> InvoicePaymentRow:
    values = _values(record, len(InvoicePaymentRow._fields) - 1)
    return InvoicePaymentRow._make([*values, _mark(record)])


def customer_from(record: asyncpg.Record) -> CustomerRow:
    checkout_at = record["checkout_event_at"]
    return CustomerRow(
        customer_id=record["customer_id"],
        metadata_user_id=record["metadata_user_id"],
        email=record["email"],
        name=record["name"],
        deleted=record["deleted"],
        mark=_mark(record, status=False),
        checkout_user_id=record["checkout_user_id"],
        checkout_mark=Mark(0, checkout_at, 0, record["checkout_event_id"])
        if checkout_at is not None
        else None,
    )


async def load(
    conn: asyncpg.Connection,
    names: Names,
    *,
    invoices: bool,
    payments: bool,
    refunds: bool,
    disputes: bool,
    subscriptions: bool,
    customers: bool,
    invoice_payments: bool = False,
) -> Ledger:
    """The rows ``names`` name by id or payment reference, of the tables asked for (call
    with them locked); then the invoices, customers and receipts the loaded payments (and
    the invoices the loaded links) name. Each id goes only to the index it can be found
    in: a probe per id and column is most of a batch's reading."""
    ledger = Ledger()
    refs = sorted(names.refs)
    if payments:
        for record in await conn.fetch(_LOAD_PAYMENTS, refs, refs):
            row = payment_from(record)
            ledger.payments.load(row.payment_id, row)
    if invoice_payments:
        links, invoice_ids = sorted(names.invoice_payments), sorted(names.invoices)
        for record in await conn.fetch(_LOAD_INVOICE_PAYMENTS, links, invoice_ids, refs):
            row_l = invoice_payment_from(record)
            ledger.invoice_payments.load(row_l.invoice_payment_id, row_l)
    if invoices:
        for record in await conn.fetch(_LOAD_INVOICES, sorted(names.invoices), refs):
            row_i = invoice_from(record)
            ledger.invoices.load(row_i.invoice_id, row_i)
    if refunds:
        for record in await conn.fetch(_LOAD_REFUNDS, sorted(names.refunds), refs):
            row_r = refund_from(record)
            ledger.refunds.load(row_r.refund_id, row_r)
    if disputes:
        for record in await conn.fetch(_LOAD_DISPUTES, sorted(names.disputes), refs):
            row_d = dispute_from(record)
            ledger.disputes.load(row_d.dispute_id, row_d)
    if subscriptions:
        for record in await conn.fetch(_LOAD_SUBSCRIPTIONS, sorted(names.subscriptions)):
            row_s = subscription_from(record)
            ledger.subscriptions.load(row_s.subscription_id, row_s)
    loaded = ledger.payments.rows.values()
    if invoices:
        more = {p.invoice_id for p in loaded if p.invoice_id}
        more |= {link.invoice_id for link in ledger.invoice_payments.rows.values()}
        more -= ledger.invoices.rows.keys()
        if more:
            for record in await conn.fetch(_LOAD_INVOICES_BY_ID, sorted(more)):
                row_i = invoice_from(record)
                ledger.invoices.load(row_i.invoice_id, row_i)
    if customers:
        wanted = names.customers | {p.customer_id for p in loaded if p.customer_id}
        for record in await conn.fetch(_LOAD_CUSTOMERS, sorted(wanted)):
            row_c = customer_from(record)
            ledger.customers.load(row_c.customer_id, row_c)
    if payments:
        wanted = names.refs | ledger.payments.rows.keys()
        ledger.receipted = {
            r["payment_id"] for r in await conn.fetch(_LOAD_RECEIPTED, sorted(wanted))
        }
    return ledger


# -- saving ----------------------------------------------------------------------------------


def _mark_json(mark: Mark | None, prefix: str = "", *, status: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        f"{prefix}event_at": mark.at if mark else None,
        f"{prefix}event_rank": mark.rank if mark else None,
        f"{prefix}event_id": mark.event_id if mark else None,
    }
    if status:
        out[f"{prefix}status_rank"] = mark.status_rank if mark else None
    return out


def _row_json(row: Any, columns: Columns, marks: int = 1) -> dict[str, Any]:
    """``row``'s content by column name (jsonb as JSON text), its main mark expanded."""
    fields = row._fields[: len(row._fields) - marks]
    out = dict(zip(fields, row[: len(fields)], strict=True))
    for name, kind in columns:
        if kind == "jsonb":
            out[name] = json_text(out[name])
    out.update(_mark_json(row.mark))
    return out


def _payment_json(row: PaymentRow) -> dict[str, Any]:
    return {**_row_json(row, _PAYMENT, marks=2), **_mark_json(row.charge_mark, "charge_")}


def _customer_json(row: CustomerRow) -> dict[str, Any]:
    checkout = row.checkout_mark
    return {
        "customer_id": row.customer_id,
        "user_id": row.user_id,
        "metadata_user_id": row.metadata_user_id,
        "email": row.email,
        "name": row.name,
        "deleted": row.deleted,
        **_mark_json(row.mark, status=False),
        "checkout_user_id": row.checkout_user_id,
        "checkout_event_at": checkout.at if checkout else None,
        "checkout_event_id": checkout.event_id if checkout else None,
    }


async def save(conn: asyncpg.Connection, ledger: Ledger) -> None:
    """Write back the rows the handler put: one statement per table."""
    customers = ledger.customers
    subscriptions, invoices = ledger.subscriptions, ledger.invoices
    payments, refunds, disputes = ledger.payments, ledger.refunds, ledger.disputes
    links = ledger.invoice_payments
    tables: list[tuple[str, list[dict[str, Any]]]] = [
        (_PUT_CUSTOMERS, [_customer_json(customers.rows[k]) for k in sorted(customers.changed)]),
        (
            _PUT_SUBSCRIPTIONS,
            [
                _row_json(subscriptions.rows[k], _SUBSCRIPTION)
                for k in sorted(subscriptions.changed)
            ],
        ),
        (_PUT_INVOICES, [_row_json(invoices.rows[k], _INVOICE) for k in sorted(invoices.changed)]),
        (_PUT_PAYMENTS, [_payment_json(payments.rows[k]) for k in sorted(payments.changed)]),
        (_PUT_REFUNDS, [_row_json(refunds.rows[k], _REFUND) for k in sorted(refunds.changed)]),
        (_PUT_DISPUTES, [_row_json(disputes.rows[k], _DISPUTE) for k in sorted(disputes.changed)]),
        (
            _PUT_INVOICE_PAYMENTS,
            [_row_json(links.rows[k], _INVOICE_PAYMENT) for k in sorted(links.changed)],
        ),
    ]
    for statement, rows in tables:
        if rows:
            await conn.execute(statement, json_text(rows))


# -- receipts --------------------------------------------------------------------------------


async def take_numbers(
    conn: asyncpg.Connection, sequence: tuple[str, bool, str, int], count: int
) -> range:
    """The next ``count`` numbers of the (account, livemode, prefix, year) sequence: one
    statement that creates or increments its counter row, which stays locked until the
    transaction ends (so numbers are gapless: a rollback returns them)."""
    last: int = await conn.fetchval(_TAKE_NUMBERS, *sequence, count)
    return range(last - count + 1, last + 1)


async def insert_receipts(conn: asyncpg.Connection, receipts: Sequence[ReceiptRow]) -> None:
    """Insert new receipts (``payment_id`` and the number are unique: a second receipt for
    a payment is an error, never a second row)."""
    if receipts:
        await conn.execute(_PUT_RECEIPTS, json_text([r._asdict() for r in receipts]))
