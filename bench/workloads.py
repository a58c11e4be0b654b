"""What ``bench worker`` publishes for each worker, which ceiling it runs, and the effects
both runs must agree on.

- ``entitlement`` (the default): subscription events (``bench.events``) against
  ``bench.raw_consumer``; every round compares the entitlements rows (a digest of each
  row's limit and sources).
- ``invoice``: payment and invoice events (``bench.ledger_events``) against
  ``bench.raw_ledger``; every round compares the rows per ledger table, the receipts
  (count, and gapless: each sequence numbered 1..n with its counter row at n), their
  document delivery rows, and a digest of each invoice's status and amount paid, each
  payment's status, invoice and amount refunded, each refund's payment and amount, and
  which payments have a receipt. Receipt PDFs are not rendered in either run: (b) runs
  with ``bench.parked_receipts``' document channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import asyncpg

from bench import events, ledger_events
from workers.entitlement.worker import NAME as ENTITLEMENT
from workers.invoice.receipts import DOCUMENT_CHANNEL
from workers.invoice.worker import NAME as INVOICE
from workers.registry import DECLARATION_OVERRIDE_ENV

ROOT = Path(__file__).resolve().parents[1]


class Effects(NamedTuple):
    summary: str
    """What the run wrote, in words (the report quotes round 1's)."""
    digest: str
    """The same as one comparable value."""
    outbox: int
    """Outbox rows present (the ceiling's: it relays none)."""


@dataclass(frozen=True)
class Workload:
    worker: str
    """``billing-fleet worker NAME``, and its ``processed_events`` consumer."""
    raw_module: str
    """``python -m MODULE``: the ceiling (``bench.raw_loop``'s arguments)."""
    described: str
    """The events, for the report's first line."""
    messages: list[events.Message]
    effects: Callable[[asyncpg.Connection], Awaitable[Effects]]
    worker_env: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    """Lines the report prints under its header."""


# -- entitlement ------------------------------------------------------------------------------

_ENTITLEMENTS = """
SELECT count(*) AS n, md5(coalesce(string_agg(
    customer_id || '/' || feature || '/' || coalesce("limit"::text, '-') || '/'
    || array_to_string(sources, ','), ';' ORDER BY customer_id, feature), '')) AS digest,
    (SELECT count(*) FROM outbox) AS outbox
FROM entitlements
"""


async def entitlement_effects(conn: asyncpg.Connection) -> Effects:
    row = await conn.fetchrow(_ENTITLEMENTS)
    assert row is not None  # an aggregate returns one row
    return Effects(
        f"entitlements ({row['n']:,} rows)", f"{row['n']}/{row['digest']}", row["outbox"]
    )


def entitlement(workdir: Path, count: int, customers: int | None) -> Workload:
    customers = customers or max(1, count // 4)
    catalog = events.write_catalog(workdir / "catalog.yaml")
    return Workload(
        worker=ENTITLEMENT,
        raw_module="bench.raw_consumer",
        described=f"{count:,} subscription events ({customers:,} customers, "
        f"{len(events.PRICES)} plans)",
        messages=[events.to_message(e) for e in events.subscription_events(count, customers)],
        effects=entitlement_effects,
        worker_env={"BILLING_ENTITLEMENT_CATALOG_PATH": str(catalog)},
    )


# -- invoice ----------------------------------------------------------------------------------

_LEDGER = """
WITH sequences AS (
    SELECT c.last_number, count(r.number) AS n, min(r.sequence) AS lo, max(r.sequence) AS hi
    FROM ledger_receipt_counters c
    LEFT JOIN ledger_receipts r USING (account, prefix, year)
    GROUP BY c.account, c.prefix, c.year, c.last_number
)
SELECT
    (SELECT count(*) FROM ledger_invoices) AS invoices,
    (SELECT count(*) FROM ledger_payments) AS payments,
    (SELECT count(*) FROM ledger_refunds) AS refunds,
    (SELECT count(*) FROM ledger_receipts) AS receipts,
    (SELECT count(*) FROM sequences) AS sequences,
    (SELECT coalesce(bool_and(n = last_number AND lo = 1 AND hi = n), false) FROM sequences)
        AS gapless,
    (SELECT count(*) FROM deliveries WHERE channel = $1) AS documents,
    md5(concat_ws('|',
        (SELECT string_agg(invoice_id || '/' || status || '/' || amount_paid, ';'
                           ORDER BY invoice_id) FROM ledger_invoices),
        (SELECT string_agg(payment_id || '/' || status || '/' || coalesce(invoice_id, '-')
                           || '/' || amount_refunded, ';' ORDER BY payment_id)
         FROM ledger_payments),
        (SELECT string_agg(refund_id || '/' || coalesce(payment_id, '-') || '/' || amount, ';'
                           ORDER BY refund_id) FROM ledger_refunds),
        (SELECT string_agg(payment_id, ';' ORDER BY payment_id) FROM ledger_receipts)))
        AS digest,
    (SELECT count(*) FROM outbox) AS outbox
"""


async def ledger_effects(conn: asyncpg.Connection) -> Effects:
    row = await conn.fetchrow(_LEDGER, DOCUMENT_CHANNEL)
    assert row is not None  # one row of scalar subqueries
    gapless = "gapless" if row["gapless"] else "NOT GAPLESS"
    summary = (
        f"ledger rows ({row['invoices']:,} invoices, {row['payments']:,} payments, "
        f"{row['refunds']:,} refunds), receipts ({row['receipts']:,}, {gapless} in "
        f"{row['sequences']} sequence(s)), {row['documents']:,} receipt_pdf delivery rows"
    )
    counts = "/".join(
        str(row[name])
        for name in ("invoices", "payments", "refunds", "receipts", "gapless", "documents")
    )
    return Effects(summary, f"{counts}/{row['digest']}", row["outbox"])


def invoice(workdir: Path, count: int, customers: int | None) -> Workload:
    customers = customers or max(1, count // 8)
    stripe = list(ledger_events.payment_events(count, customers))
    payments = sum(e["type"] == "charge.succeeded" for e in stripe)
    refunds = sum(e["type"] == "charge.refunded" for e in stripe)
    return Workload(
        worker=INVOICE,
        raw_module="bench.raw_ledger",
        described=f"{count:,} payment events ({payments:,} payments of {customers:,} "
        "customers, each charge.succeeded + payment_intent.succeeded + invoice.paid; "
        f"{refunds:,} charge.refunded)",
        messages=[events.to_message(e) for e in stripe],
        effects=ledger_effects,
        worker_env={
            DECLARATION_OVERRIDE_ENV: "bench.parked_receipts:DECLARATION",
            "PYTHONPATH": str(ROOT),  # where bench.parked_receipts is
        },
        notes=(
            "receipt PDFs: not counted, rendered in neither run. Both write each receipt's "
            f"{DOCUMENT_CHANNEL} delivery row in the events' transaction; (b)'s document "
            "channel is parked (bench.parked_receipts: every send a retry in an hour, so the "
            "dispatcher cools it after one claim): a render costs ~0.3 s of a core and would "
            "take the CPUs from the ledger writes measured here (bench receipts measures them)",
        ),
    )


WORKLOADS: dict[str, Callable[[Path, int, int | None], Workload]] = {
    ENTITLEMENT: entitlement,
    INVOICE: invoice,
}
