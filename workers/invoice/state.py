"""The in-memory working copy of the ledger rows a batch of events may touch.

``store.load`` reads them once (the rows the batch's ids and references name); the handler
applies each event to this copy, exactly as one event at a time against the tables would;
``store.save`` writes back the rows that changed. Rows are found by id or by a reference
(a charge or payment intent id) through indexes kept up to date as rows are put. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from workers.invoice.rows import (
    CustomerRow,
    DisputeRow,
    InvoicePaymentRow,
    InvoiceRow,
    PaymentRow,
    RefundRow,
    SubscriptionRow,
)

Row = TypeVar(
    "Row",
    InvoiceRow,
    PaymentRow,
    RefundRow,
    DisputeRow,
    SubscriptionRow,
    CustomerRow,
    InvoicePaymentRow,
)
Kind = Literal["invoice", "payment", "refund", "dispute"]
"""The tables whose changes are events on ``invoices.v1``."""
Touched = tuple[Kind, str]


class Table(Generic[Row]):
    """One table's rows by id, an index by reference, and the ids to write back."""

    def __init__(self, refs: Callable[[Row], Iterable[str | None]] | None = None) -> None:
        self.rows: dict[str, Row] = {}
        self.changed: set[str] = set()
        self._refs: Callable[[Row], Iterable[str | None]] | None = refs
        self._by_ref: dict[str, set[str]] = {}

    def load(self, key: str, row: Row) -> None:
        """A row as stored (not written back unless put)."""
        self._index(key, row)
        self.rows[key] = row

    def put(self, key: str, row: Row) -> None:
        old = self.rows.get(key)
        if old is not None and self._refs is not None:
            for ref in self._refs(old):
                if ref is not None:
                    self._by_ref.get(ref, set()).discard(key)
        self._index(key, row)
        self.rows[key] = row
        self.changed.add(key)

    def find(self, refs: Iterable[str | None]) -> list[Row]:
        """The rows any of ``refs`` names, by id order (deterministic)."""
        keys: set[str] = set()
        for ref in refs:
            if ref is not None:
                keys |= self._by_ref.get(ref, set())
        return [self.rows[key] for key in sorted(keys)]

    def _index(self, key: str, row: Row) -> None:
        if self._refs is None:
            return
        for ref in self._refs(row):
            if ref is not None:
                self._by_ref.setdefault(ref, set()).add(key)


def _payment_refs(row: PaymentRow) -> tuple[str | None, ...]:
    return (row.payment_id, row.payment_intent_id, row.charge_id)


def _invoice_refs(row: InvoiceRow) -> tuple[str | None, ...]:
    return (row.payment_intent_id, row.charge_id)


def _refund_refs(row: RefundRow) -> tuple[str | None, ...]:
    return (row.charge_id, row.payment_intent_id)


def _dispute_refs(row: DisputeRow) -> tuple[str | None, ...]:
    return (row.charge_id, row.payment_intent_id)


def _link_refs(row: InvoicePaymentRow) -> tuple[str | None, ...]:
    return (row.payment_intent_id, row.charge_id)


@dataclass
class Names:
    """The ids a batch's events name, by what they are: what ``store.load`` finds rows
    by. ``refs`` are payment references: payment, payment intent and charge ids."""

    refs: set[str] = field(default_factory=set)
    customers: set[str] = field(default_factory=set)
    invoices: set[str] = field(default_factory=set)
    refunds: set[str] = field(default_factory=set)
    disputes: set[str] = field(default_factory=set)
    subscriptions: set[str] = field(default_factory=set)
    invoice_payments: set[str] = field(default_factory=set)


@dataclass
class Ledger:
    invoices: Table[InvoiceRow] = field(default_factory=lambda: Table(_invoice_refs))
    payments: Table[PaymentRow] = field(default_factory=lambda: Table(_payment_refs))
    refunds: Table[RefundRow] = field(default_factory=lambda: Table(_refund_refs))
    disputes: Table[DisputeRow] = field(default_factory=lambda: Table(_dispute_refs))
    subscriptions: Table[SubscriptionRow] = field(default_factory=Table)
    customers: Table[CustomerRow] = field(default_factory=Table)
    invoice_payments: Table[InvoicePaymentRow] = field(default_factory=lambda: Table(_link_refs))
    """Links of invoices to payments, found by the payment's references."""
    receipted: set[str] = field(default_factory=set)
    """Payment ids that have a receipt (stored, or issued earlier in this batch)."""
    touched: dict[Touched, InvoiceRow | PaymentRow | RefundRow | DisputeRow | None] = field(
        default_factory=dict
    )
    """The rows the current event put, in order, each with its value before the event."""

    def begin_event(self) -> None:
        self.touched = {}

    def links_of(self, invoice_id: str) -> list[InvoicePaymentRow]:
        """The loaded links of an invoice, by id (a batch holds few)."""
        rows = self.invoice_payments.rows
        return [rows[key] for key in sorted(rows) if rows[key].invoice_id == invoice_id]

    def put_invoice(self, row: InvoiceRow) -> None:
        self._touch(("invoice", row.invoice_id), self.invoices.rows.get(row.invoice_id))
        self.invoices.put(row.invoice_id, row)

    def put_payment(self, row: PaymentRow) -> None:
        self._touch(("payment", row.payment_id), self.payments.rows.get(row.payment_id))
        self.payments.put(row.payment_id, row)

    def put_refund(self, row: RefundRow) -> None:
        self._touch(("refund", row.refund_id), self.refunds.rows.get(row.refund_id))
        self.refunds.put(row.refund_id, row)

    def put_dispute(self, row: DisputeRow) -> None:
        self._touch(("dispute", row.dispute_id), self.disputes.rows.get(row.dispute_id))
        self.disputes.put(row.dispute_id, row)

    def _touch(
        self, key: Touched, old: InvoiceRow | PaymentRow | RefundRow | DisputeRow | None
    ) -> None:
        if key not in self.touched:
            self.touched[key] = old
