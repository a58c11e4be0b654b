"""Receipts: one per payment that reached ``succeeded``, numbered without gaps.

Numbers count per (account, mode, prefix, year): ``<prefix>-<year>-<sequence:06d>`` for
the platform's live payments, ``<prefix>-<account>-<year>-<sequence:06d>`` for a connected
account's, and ``TEST`` before the year for test-mode payments (``R-TEST-2026-000001``,
``R-acct_1-TEST-2026-000001``): a test payment never takes a live number. A receipt
is dated when its payment succeeded, as the event that issued it reports it
(``rules.receipt_paid_at``): the succeeded charge's ``created`` when that event carries the
charge, which every such event of the payment (``charge.succeeded``, an intent's
``payment_intent.succeeded`` with its charge expanded or listed) gives alike, whichever
comes first; else the succeeded event's own time (an intent's event that names its charge
by id only: up to a few seconds later than the charge's, so only a payment succeeding at
midnight on New Year's Eve can get another year by the order its events came in). The
payment's ``created_at`` is not used: an intent may be created days before it is paid,
and a charge's event does not know it. ``year`` is ``paid_at``'s UTC year.

While the events of a batch are applied the receipts are only decided
(``PendingReceipt``, in order); ``number`` then takes each
sequence's numbers with one counter statement per key, keys in sorted order, in the
events' transaction: a rollback returns them, and a receipt is never deleted, so no
number is skipped, freed or used twice. The transaction that issues a receipt also
returns the ``DOCUMENT_CHANNEL`` delivery that has its PDF rendered (outside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

from contracts import BillingEvent
from workers.invoice import store
from workers.invoice.documents import delivery
from workers.invoice.rows import CustomerRow, InvoiceRow, PaymentRow, ReceiptRow
from workers.runtime.deliveries.model import Delivery

DOCUMENT_CHANNEL: Final = delivery.CHANNEL
"""The delivery channel whose sender renders a receipt's PDF (defined with the documents:
``documents.delivery``)."""
DOCUMENT_DESTINATION: Final = delivery.DESTINATION

Sequence_Key = tuple[str, bool, str, int]
"""(account, livemode, prefix, year): one gapless sequence."""

TEST_MODE: Final = "TEST"
"""Before the year in the numbers of test-mode payments."""


def receipt_number(prefix: str, account: str, year: int, sequence: int, *, livemode: bool) -> str:
    parts = [prefix, *([account] if account else []), *([] if livemode else [TEST_MODE])]
    return "-".join([*parts, str(year), f"{sequence:06d}"])


def document_delivery(number: str) -> Delivery:
    """Renders receipt ``number``'s PDF; its key makes a replayed event add no second row."""
    return Delivery(
        channel=DOCUMENT_CHANNEL,
        destination=DOCUMENT_DESTINATION,
        idempotency_key=f"receipt-pdf:{number}",
        payload=number.encode(),
        metadata={"number": number},
    )


@dataclass(frozen=True, slots=True)
class PendingReceipt:
    """A receipt decided while an event was applied, with what it shows as known then;
    numbered once the batch's counters are taken."""

    payment: PaymentRow
    invoice: InvoiceRow | None
    customer: CustomerRow | None
    issued_at: datetime
    cause: BillingEvent
    prefix: str
    paid_at: datetime
    """``rules.receipt_paid_at`` of the event that issued it."""

    @property
    def key(self) -> Sequence_Key:
        payment = self.payment
        return (payment.account, payment.livemode, self.prefix, self.paid_at.astimezone(UTC).year)


async def number(conn: asyncpg.Connection, pending: Sequence[PendingReceipt]) -> list[ReceiptRow]:
    """Number ``pending`` (in order within each sequence) and insert the receipts; the
    rows, in ``pending``'s order."""
    by_key: dict[Sequence_Key, list[int]] = {}
    for index, receipt in enumerate(pending):
        by_key.setdefault(receipt.key, []).append(index)
    rows: list[ReceiptRow | None] = [None] * len(pending)
    for key in sorted(by_key):  # counters in key order: two batches never wait in a cycle
        account, livemode, prefix, year = key
        indexes = by_key[key]
        numbers = await store.take_numbers(conn, key, len(indexes))
        for index, sequence in zip(indexes, numbers, strict=True):
            receipt = pending[index]
            rows[index] = ReceiptRow(
                number=receipt_number(prefix, account, year, sequence, livemode=livemode),
                account=account,
                livemode=livemode,
                prefix=prefix,
                year=year,
                sequence=sequence,
                payment_id=receipt.payment.payment_id,
                customer_id=receipt.payment.customer_id,
                amount=receipt.payment.amount,
                currency=receipt.payment.currency,
                paid_at=receipt.paid_at,
                issued_at=receipt.issued_at,
            )
    numbered = [row for row in rows if row is not None]
    await store.insert_receipts(conn, numbered)
    return numbered
