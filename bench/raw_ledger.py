"""The invoice worker benchmark's ceiling: the same ledger rows, receipts, deliveries and
``invoices.v1`` outbox rows with no framework, batched SQL (the loop, lanes and process
are ``bench.raw_loop``'s).

Each lane is one asyncpg transaction of a few statements, each over the whole lane:

1. the dedupe insert into ``processed_events``;
2. ``ledger_payments``, ``ledger_invoices`` and the refunds payment events list
   (``ledger_refunds``): one ``INSERT ... ON CONFLICT DO UPDATE`` per table from one JSON
   parameter, the newest-wins rule left to the SQL (``DISTINCT ON`` the greatest mark
   within the lane, and ``WHERE stored mark < new mark`` against the row), with what
   only grows or is set once merged there too (``GREATEST``, ``LEAST``, ``coalesce``);
   the statement returns each written row, whether it is new and whether its content
   changed (its row before, from a CTE of the same snapshot);
3. the link of payments to the invoices naming their intent or charge (new payments find
   their invoice in their insert; invoices of the lane update their payments);
4. a receipt per payment that became ``succeeded``: the counter row of its (account,
   prefix, year) incremented by the lane's count in one statement per sequence (the
   worker's gapless numbers), the receipts, and each receipt's document delivery row
   (``receipt_pdf``) as the worker writes it (no dispatcher here: nothing is rendered);
5. one ``outbox`` row per written row whose content changed, per receipt: the worker's
   own record builders (``workers.invoice.emit``: the same JSON bodies and CloudEvents
   headers), typed by the worker's pure rules from the row before and after.

No advisory locks (a lane's rows are its customers', as the lanes split by key; the
counter row serializes the lanes as it does the worker's) and no in-memory ledger. The
column types come from the tables themselves (read once at start).

Usage: ``python -m bench.raw_ledger BOOTSTRAP DATABASE_URL GROUP BATCH EXPECT
FETCH_WAIT_MS LANES``; exits once EXPECT records were applied (or on SIGINT/SIGTERM).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, cast

import asyncpg
from pydantic_core import to_json

from bench import raw_loop
from bench.raw_loop import Record
from contracts import INVOICES, BillingEvent, PaymentEvent
from workers.invoice import emit, rules, store
from workers.invoice.declaration import DECLARATION
from workers.invoice.receipts import (
    DOCUMENT_CHANNEL,
    PendingReceipt,
    document_delivery,
    receipt_number,
)
from workers.invoice.rows import InvoiceRow, PaymentRow, ReceiptRow, RefundRow
from workers.invoice.settings import InvoiceSettings
from workers.runtime.spec import Outgoing

WORKER: Final = DECLARATION.name  # the outbox and deliveries rows are the invoice worker's
PREFIX: Final = InvoiceSettings.model_fields["invoice_receipt_prefix"].default

MARK: Final = ("status_rank", "event_at", "event_rank", "event_id")
CHARGE_MARK: Final = tuple(f"charge_{name}" for name in MARK)
INVOICE_COLUMNS: Final = (*InvoiceRow._fields[:-1], *MARK)
PAYMENT_COLUMNS: Final = (*PaymentRow._fields[:-2], *MARK, *CHARGE_MARK)
REFUND_COLUMNS: Final = (*RefundRow._fields[:-1], *MARK)
RECEIPT_COLUMNS: Final = ReceiptRow._fields
TABLES: Final = ("ledger_invoices", "ledger_payments", "ledger_refunds", "ledger_receipts")

_NEWER = (
    "(s.status_rank, s.event_at, s.event_rank, s.event_id)"
    " < (EXCLUDED.status_rank, EXCLUDED.event_at, EXCLUDED.event_rank, EXCLUDED.event_id)"
)
# A new payment's invoice: one naming its intent, else its charge (an intent or charge has
# one invoice; no min() or ORDER BY, which the planner may serve from the primary key).
_INVOICE_OF = (
    "coalesce(t.invoice_id,"
    " (SELECT i.invoice_id FROM ledger_invoices i"
    " WHERE i.payment_intent_id = t.payment_intent_id LIMIT 1),"
    " (SELECT i.invoice_id FROM ledger_invoices i WHERE i.charge_id = t.charge_id LIMIT 1))"
)
# Payments without an invoice that the lane's invoices name by intent or charge.
_LINK = """
WITH named AS (
    SELECT DISTINCT ON (p.payment_id) p.payment_id, t.invoice
    FROM unnest($1::text[], $2::text[], $3::text[]) AS t(invoice, intent, charge)
    CROSS JOIN LATERAL (
        SELECT payment_id FROM ledger_payments
        WHERE payment_intent_id = t.intent AND invoice_id IS NULL
        UNION
        SELECT payment_id FROM ledger_payments WHERE charge_id = t.charge AND invoice_id IS NULL
    ) AS p
    ORDER BY p.payment_id, t.invoice
)
UPDATE ledger_payments AS p SET invoice_id = named.invoice, updated_at = now()
FROM named WHERE p.payment_id = named.payment_id
RETURNING {returning}
"""
_TAKE_NUMBERS = """
INSERT INTO ledger_receipt_counters (account, livemode, prefix, year, last_number)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account, livemode, prefix, year)
DO UPDATE SET last_number = ledger_receipt_counters.last_number + EXCLUDED.last_number
RETURNING last_number
"""
_DELIVERIES = """
INSERT INTO deliveries (worker, channel, destination, idempotency_key, payload, metadata)
SELECT $1, $2, d, k, p, m::jsonb FROM unnest($3::text[], $4::text[], $5::bytea[], $6::text[])
    AS t(d, k, p, m)
"""
_OUTBOX = """
INSERT INTO outbox (worker, topic, key, value, headers)
SELECT $1, $2, k, v, h::jsonb FROM unnest($3::bytea[], $4::bytea[], $5::text[]) AS t(k, v, h)
"""


class Statements:
    """The lane's SQL, built from the tables' column types."""

    def __init__(self, types: Mapping[tuple[str, str], str]) -> None:
        self.types = types
        self.invoices = self._upsert(
            "ledger_invoices",
            INVOICE_COLUMNS,
            content=InvoiceRow._fields[:-1],
            merges={
                **_filled(
                    "customer_id", "number", "subscription_id", "payment_intent_id", "charge_id"
                ),
                **_filled("paid_at"),
                "created_at": "LEAST(s.created_at, EXCLUDED.created_at)",
            },
            old=("status",),
        )
        self.payments = self._upsert(
            "ledger_payments",
            PAYMENT_COLUMNS,
            content=PaymentRow._fields[:-2],
            merges={
                **_filled("customer_id", "payment_intent_id", "charge_id", "invoice_id"),
                **_filled("receipt_url", "amount_captured", "payment_method_type"),
                **_filled("card_brand", "card_last4", *CHARGE_MARK),
                "amount_refunded": "GREATEST(s.amount_refunded, EXCLUDED.amount_refunded)",
                "created_at": "LEAST(s.created_at, EXCLUDED.created_at)",
                "succeeded_at": "LEAST(s.succeeded_at, EXCLUDED.succeeded_at)",
            },
            old=("status", "amount_refunded"),
            inserts={"invoice_id": _INVOICE_OF},
        )
        self.refunds = self._upsert(
            "ledger_refunds",
            REFUND_COLUMNS,
            content=RefundRow._fields[:-1],
            merges={
                **_filled("payment_id", "charge_id", "payment_intent_id", "customer_id"),
                "created_at": "LEAST(s.created_at, EXCLUDED.created_at)",
            },
            old=(),
        )
        self.link = _LINK.format(
            returning=self._returning("ledger_payments", PAYMENT_COLUMNS, "p.")
        )
        receipts = self._record("ledger_receipts", RECEIPT_COLUMNS)
        self.receipts = (
            f"INSERT INTO ledger_receipts ({', '.join(RECEIPT_COLUMNS)}) "
            f"SELECT * FROM json_to_recordset($1::text::json) AS t({receipts})"
        )

    def _record(self, table: str, columns: Sequence[str]) -> str:
        return ", ".join(f'"{c}" {self.types[table, c]}' for c in columns)

    def _returning(self, table: str, columns: Sequence[str], alias: str = "") -> str:
        """The columns as ``store``'s row readers take them (jsonb as text)."""
        return ", ".join(
            f"{alias}{c}::text AS {c}" if self.types[table, c] == "jsonb" else f"{alias}{c}"
            for c in columns
        )

    def _upsert(
        self,
        table: str,
        columns: Sequence[str],
        *,
        content: Sequence[str],
        merges: Mapping[str, str],
        old: Sequence[str],
        inserts: Mapping[str, str] | None = None,
    ) -> str:
        key = columns[0]
        values = ", ".join((inserts or {}).get(c, f"t.{c}") for c in columns)
        sets = ", ".join(f"{c} = {merges.get(c, f'EXCLUDED.{c}')}" for c in columns[1:])
        before = ", ".join(f"o.{c} AS old_{c}" for c in old)
        after_content = ", ".join(f"up.{c}" for c in content)
        old_content = ", ".join(f"o.{c}" for c in content)
        return f"""
WITH t AS (
    SELECT DISTINCT ON ({key}) * FROM json_to_recordset($1::text::json)
        AS t({self._record(table, columns)})
    ORDER BY {key}, status_rank DESC, event_at DESC, event_rank DESC, event_id DESC
), o AS (
    SELECT {self._returning(table, columns)} FROM {table}
    WHERE {key} = ANY(ARRAY(SELECT {key} FROM t))
), up AS (
    INSERT INTO {table} AS s ({", ".join(columns)}) SELECT {values} FROM t
    ON CONFLICT ({key}) DO UPDATE SET {sets}, updated_at = now()
    WHERE {_NEWER}
    RETURNING {self._returning(table, columns, "s.")}
)
SELECT up.*, {before + ", " if before else ""}o.{key} IS NULL AS inserted,
       ROW({after_content}) IS DISTINCT FROM ROW({old_content}) AS changed
FROM up LEFT JOIN o USING ({key})
"""


def _filled(*columns: str) -> dict[str, str]:
    """Set once: the new row's value, else the stored one."""
    return {c: f"coalesce(EXCLUDED.{c}, s.{c})" for c in columns}


# -- one lane ---------------------------------------------------------------------------------


def _mark(event: dict[str, Any], status_rank: int, event_rank: int) -> dict[str, Any]:
    return {
        "status_rank": status_rank,
        "event_at": event["occurred_at"],
        "event_rank": event_rank,
        "event_id": event["source"]["stripe_event_id"],
    }


def _owner(event: dict[str, Any]) -> dict[str, Any]:
    source = event["source"]
    return {
        "customer_id": event["customer_id"],
        "account": source["account"] or "",
        "livemode": source["livemode"],
    }


def invoice_json(event: dict[str, Any]) -> dict[str, Any]:
    invoice = event["invoice"]
    return {
        **invoice,
        **_owner(event),
        "invoice_id": invoice["id"],
        "created_at": invoice["created_at"] or event["occurred_at"],
        **_mark(
            event, rules.invoice_status_rank(invoice["status"]), rules.EVENT_RANK[event["type"]]
        ),
    }


def payment_json(event: dict[str, Any]) -> dict[str, Any]:
    payment = event["payment"]
    status = rules.ledger_payment_status(event["type"], payment["status"])
    mark = _mark(event, rules.payment_status_rank(status), rules.EVENT_RANK[event["type"]])
    carried = any(payment.get(name) is not None for name in rules.CHARGE_FIELDS)
    return {
        **payment,
        **_owner(event),
        "payment_id": payment["id"],
        "status": status,
        "created_at": payment["created_at"] or event["occurred_at"],
        "succeeded_at": event["occurred_at"] if status == rules.SUCCEEDED else None,
        **mark,
        **({f"charge_{name}": value for name, value in mark.items()} if carried else {}),
    }


def refund_json(refund: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    payment = event["payment"]
    return {
        **refund,
        **_owner(event),
        "refund_id": refund["id"],
        "payment_id": payment["id"],
        "charge_id": refund["charge_id"] or payment["charge_id"],
        "payment_intent_id": refund["payment_intent_id"] or payment["payment_intent_id"],
        "created_at": refund["created_at"] or event["occurred_at"],
        **_mark(
            event,
            rules.refund_status_rank(refund["status"]),
            rules.REFUND_EVENT_RANK[event["type"]],
        ),
    }


class _Source(NamedTuple):
    stripe_event_id: str
    livemode: bool


class _Cause(NamedTuple):
    source: _Source
    occurred_at: datetime


def _cause(event: dict[str, Any]) -> BillingEvent:
    """What the records' envelopes read of their cause (``emit._record``: its Stripe id,
    mode and time), from the event's JSON: no model built (pydantic's ``model_construct``
    cost a seventh of this process's CPU)."""
    source = event["source"]
    at = datetime.fromisoformat(event["occurred_at"])
    return cast("BillingEvent", _Cause(_Source(source["stripe_event_id"], source["livemode"]), at))


class Lane:
    """One lane's transaction: the statements in order, the records of what changed."""

    def __init__(
        self, sql: Statements, conn: asyncpg.Connection, events: list[dict[str, Any]]
    ) -> None:
        self.sql, self.conn = sql, conn
        self.causes = {e["source"]["stripe_event_id"]: e for e in events}
        self.invoice_events = {e["invoice"]["id"]: e for e in events if "invoice" in e}
        self.payment_events = [e for e in events if "payment" in e]
        self.outgoing: list[Outgoing] = []

    def cause(self, event_id: str) -> BillingEvent:
        return _cause(self.causes[event_id])

    async def upsert(self, statement: str, rows: list[dict[str, Any]]) -> list[asyncpg.Record]:
        if not rows:
            return []
        written: list[asyncpg.Record] = await self.conn.fetch(statement, to_json(rows).decode())
        return written

    async def payments(self) -> list[PaymentRow]:
        """Upsert the payments; the rows that became ``succeeded`` (receipts due)."""
        rows = [payment_json(e) for e in self.payment_events]
        succeeded: list[PaymentRow] = []
        for record in await self.upsert(self.sql.payments, rows):
            row = store.payment_from(record)
            before = None
            if not record["inserted"]:
                before = row._replace(
                    status=record["old_status"], amount_refunded=record["old_amount_refunded"]
                )
            if record["changed"]:
                cause = self.cause(row.mark.event_id)
                for event_type in rules.payment_changes(before, row):
                    self.outgoing.append(emit.payment_record(row, event_type, cause))
            if row.status == rules.SUCCEEDED and (before is None or before.status != row.status):
                succeeded.append(row)
        return succeeded

    async def invoices(self) -> dict[str, InvoiceRow]:
        """Upsert the invoices and link the payments they name; the invoices written."""
        events = self.invoice_events.values()
        written: dict[str, InvoiceRow] = {}
        for record in await self.upsert(self.sql.invoices, [invoice_json(e) for e in events]):
            row = store.invoice_from(record)
            written[row.invoice_id] = row
            if record["changed"]:
                before = None if record["inserted"] else row._replace(status=record["old_status"])
                cause = self.causes[row.mark.event_id]
                event_type = rules.invoice_change(before, row, cause["type"], True)
                self.outgoing.append(emit.invoice_record(row, event_type, _cause(cause)))
        if events:
            links = [(e["invoice"]["payment_intent_id"], e["invoice"]["charge_id"]) for e in events]
            ids = list(self.invoice_events)
            intents, charges = [i for i, _ in links], [c for _, c in links]
            for record in await self.conn.fetch(self.sql.link, ids, intents, charges):
                payment = store.payment_from(record)
                assert payment.invoice_id is not None  # the statement sets it
                linked_by = _cause(self.invoice_events[payment.invoice_id])
                self.outgoing.append(emit.payment_record(payment, "payment.updated", linked_by))
        return written

    async def refunds(self) -> None:
        rows = [refund_json(r, e) for e in self.payment_events for r in e["payment"]["refunds"]]
        for record in await self.upsert(self.sql.refunds, rows):
            if record["changed"]:
                row = store.refund_from(record)
                event_type = rules.refund_change(None if record["inserted"] else row)
                self.outgoing.append(
                    emit.refund_record(row, event_type, self.cause(row.mark.event_id))
                )

    async def receipts(self, paid: list[PaymentRow], invoices: Mapping[str, InvoiceRow]) -> None:
        """Number and insert a receipt per payment in ``paid``, with its document delivery
        and its ``receipt.issued`` record."""
        if not paid:
            return
        issued_at = datetime.now(UTC)
        pending = [
            PendingReceipt(
                payment,
                invoices.get(payment.invoice_id) if payment.invoice_id else None,
                None,  # no customer rows in this benchmark's events
                issued_at,
                cause,
                PREFIX,
                rules.receipt_paid_at(cause, payment)
                if isinstance(cause, PaymentEvent)
                else issued_at,
            )
            for payment, cause in ((p, self.cause(p.mark.event_id)) for p in paid)
        ]
        by_key: dict[tuple[str, bool, str, int], list[PendingReceipt]] = {}
        for receipt in pending:
            by_key.setdefault(receipt.key, []).append(receipt)
        numbered: list[ReceiptRow] = []
        for (account, livemode, prefix, year), sequence in sorted(by_key.items()):
            last = await self.conn.fetchval(
                _TAKE_NUMBERS, account, livemode, prefix, year, len(sequence)
            )
            for offset, receipt in enumerate(sequence):
                number = last - len(sequence) + 1 + offset
                row = ReceiptRow(
                    number=receipt_number(prefix, account, year, number, livemode=livemode),
                    account=account,
                    livemode=livemode,
                    prefix=prefix,
                    year=year,
                    sequence=number,
                    payment_id=receipt.payment.payment_id,
                    customer_id=receipt.payment.customer_id,
                    amount=receipt.payment.amount,
                    currency=receipt.payment.currency,
                    paid_at=receipt.paid_at,
                    issued_at=issued_at,
                )
                numbered.append(row)
                self.outgoing.append(emit.receipt_record(row, receipt))
        await self.conn.execute(
            self.sql.receipts, to_json([r._asdict() for r in numbered]).decode()
        )
        deliveries = [document_delivery(r.number) for r in numbered]
        await self.conn.execute(
            _DELIVERIES,
            WORKER,
            DOCUMENT_CHANNEL,
            [d.destination for d in deliveries],
            [d.idempotency_key for d in deliveries],
            [d.payload for d in deliveries],
            [to_json(d.metadata).decode() for d in deliveries],
        )

    async def outbox(self) -> None:
        if self.outgoing:
            await self.conn.execute(
                _OUTBOX,
                WORKER,
                INVOICES,
                [o.key.encode() for o in self.outgoing],
                [o.value for o in self.outgoing],
                [to_json(o.headers).decode() for o in self.outgoing],
            )


def applier(sql: Statements) -> raw_loop.Apply:
    async def apply(conn: asyncpg.Connection, consumer: str, records: Sequence[Record]) -> None:
        events = [json.loads(r.value or b"") for r in records]
        ids = [e["source"]["stripe_event_id"] for e in events]
        async with conn.transaction():
            new = await raw_loop.claim(conn, consumer, ids)
            fresh = [e for e, i in zip(events, ids, strict=True) if i in new]
            lane = Lane(sql, conn, fresh)
            paid = await lane.payments()
            invoices = await lane.invoices()
            await lane.refunds()
            await lane.receipts(paid, invoices)
            await lane.outbox()

    return apply


async def prepare(conn: asyncpg.Connection) -> raw_loop.Apply:
    rows = await conn.fetch(
        "SELECT attrelid::regclass::text, attname, format_type(atttypid, atttypmod)"
        " FROM pg_attribute WHERE attrelid = ANY($1::text[]::regclass[]) AND attnum > 0"
        " AND NOT attisdropped",
        list(TABLES),
    )
    return applier(Statements({(table, column): kind for table, column, kind in rows}))


if __name__ == "__main__":
    sys.exit(raw_loop.main(prepare))
