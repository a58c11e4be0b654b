"""The directory of customers (``notification_contacts``): written from ``customer.*``
events and the addresses checkouts, invoices and receipts carry; read per notice.

Every write is one upsert of one row; the handler locks a batch's customers first (in
order), since invoices.v1 and billing.events.v1 write the same rows from other
transactions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from workers.notification.rules import Contact, CustomerUpdate, EmailOffer

_LOCK_CLASS: Final = 0x6E6F74  # "not": this worker's advisory locks
_LOCK = """
SELECT pg_advisory_xact_lock($1, k)
FROM (SELECT DISTINCT hashtext(c) AS k FROM unnest($2::text[]) AS c) AS keys
ORDER BY k
"""

_APPLY_CUSTOMER = """
INSERT INTO notification_contacts AS c (customer_id, email, name, preferred_locales, user_id,
    customer_mark_at, customer_mark_rank, customer_mark_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (customer_id) DO UPDATE SET
    email = CASE WHEN c.erased_at IS NULL THEN EXCLUDED.email END,
    name = CASE WHEN c.erased_at IS NULL THEN EXCLUDED.name END,
    preferred_locales = EXCLUDED.preferred_locales,
    user_id = EXCLUDED.user_id,
    customer_mark_at = EXCLUDED.customer_mark_at,
    customer_mark_rank = EXCLUDED.customer_mark_rank,
    customer_mark_id = EXCLUDED.customer_mark_id,
    updated_at = now()
WHERE c.customer_mark_at IS NULL
   OR (EXCLUDED.customer_mark_at, EXCLUDED.customer_mark_rank, EXCLUDED.customer_mark_id)
      > (c.customer_mark_at, c.customer_mark_rank, c.customer_mark_id)
"""

# A deletion erases whatever its mark: the data goes even if a later-stamped event won.
_ERASE = """
INSERT INTO notification_contacts AS c (customer_id, user_id, customer_mark_at,
    customer_mark_rank, customer_mark_id, erased_at)
VALUES ($1, $2, $3, $4, $5, $3)
ON CONFLICT (customer_id) DO UPDATE SET
    email = NULL, name = NULL, fallback_email = NULL,
    erased_at = least(c.erased_at, EXCLUDED.erased_at),
    customer_mark_at = greatest(c.customer_mark_at, EXCLUDED.customer_mark_at),
    customer_mark_rank = CASE
        WHEN c.customer_mark_at IS NULL
          OR (EXCLUDED.customer_mark_at, EXCLUDED.customer_mark_rank, EXCLUDED.customer_mark_id)
             > (c.customer_mark_at, c.customer_mark_rank, c.customer_mark_id)
        THEN EXCLUDED.customer_mark_rank ELSE c.customer_mark_rank END,
    customer_mark_id = CASE
        WHEN c.customer_mark_at IS NULL
          OR (EXCLUDED.customer_mark_at, EXCLUDED.customer_mark_rank, EXCLUDED.customer_mark_id)
             > (c.customer_mark_at, c.customer_mark_rank, c.customer_mark_id)
        THEN EXCLUDED.customer_mark_id ELSE c.customer_mark_id END,
    updated_at = now()
"""

# The newest offer per customer of a batch (``offer_emails`` picks it): the rows end as
# offering them one by one would leave them, in one statement.
_OFFERS = """
INSERT INTO notification_contacts AS c (customer_id, fallback_email, fallback_mark_at,
    fallback_mark_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
ON CONFLICT (customer_id) DO UPDATE SET
    fallback_email = EXCLUDED.fallback_email,
    fallback_mark_at = EXCLUDED.fallback_mark_at,
    fallback_mark_id = EXCLUDED.fallback_mark_id,
    updated_at = now()
WHERE c.erased_at IS NULL
  AND (c.fallback_mark_at IS NULL
       OR (EXCLUDED.fallback_mark_at, EXCLUDED.fallback_mark_id)
          > (c.fallback_mark_at, c.fallback_mark_id))
"""

_CONTACTS = """
SELECT customer_id, email, name, preferred_locales, fallback_email, fallback_mark_at,
    fallback_mark_id, erased_at IS NOT NULL AS erased
FROM notification_contacts WHERE customer_id = ANY($1::text[])
"""


async def lock(conn: asyncpg.Connection, customer_ids: Iterable[str]) -> None:
    """Serialize writes to these customers' rows until the transaction ends: one
    statement, the keys in ascending order (PostgreSQL evaluates volatile output
    expressions after the sort), so two transactions never wait for each other in a
    cycle."""
    ids = list(set(customer_ids))
    if ids:
        await conn.execute(_LOCK, _LOCK_CLASS, ids)


async def apply_customer(conn: asyncpg.Connection, update: CustomerUpdate) -> None:
    if update.deleted:
        await conn.execute(
            _ERASE,
            update.customer_id,
            update.user_id,
            update.mark_at,
            update.mark_rank,
            update.mark_id,
        )
        return
    await conn.execute(
        _APPLY_CUSTOMER,
        update.customer_id,
        update.email,
        update.name,
        list(update.preferred_locales),
        update.user_id,
        update.mark_at,
        update.mark_rank,
        update.mark_id,
    )


async def offer_email(conn: asyncpg.Connection, offer: EmailOffer) -> None:
    """Keep ``offer`` as the customer's fallback address if it is the newest one (an
    erased customer keeps none)."""
    await offer_emails(conn, [offer])


async def offer_emails(conn: asyncpg.Connection, offers: Iterable[EmailOffer]) -> None:
    """``offer_email`` of each of ``offers``, in one statement."""
    newest: dict[str, EmailOffer] = {}
    for offer in offers:
        kept = newest.get(offer.customer_id)
        if kept is None or _newer(offer, kept.at, kept.event_id):
            newest[offer.customer_id] = offer
    if newest:
        chosen = list(newest.values())
        await conn.execute(
            _OFFERS,
            [o.customer_id for o in chosen],
            [o.email for o in chosen],
            [o.at for o in chosen],
            [o.event_id for o in chosen],
        )


def _newer(offer: EmailOffer, mark_at: datetime | None, mark_id: str | None) -> bool:
    return mark_at is None or (offer.at, offer.event_id) > (mark_at, mark_id or "")


async def contact(conn: asyncpg.Connection, customer_id: str) -> Contact | None:
    return (await snapshot(conn, [customer_id])).contact(customer_id)


@dataclass(slots=True)
class _Row:
    contact: Contact
    fallback_mark_at: datetime | None
    fallback_mark_id: str | None


class Snapshot:
    """A batch's view of the directory: its customers' rows read once, then the batch's
    own offers applied in memory in event order, by the rule ``_OFFERS`` applies (so each
    notice sees what reading the row after the offers before it would give); the writes
    go in one statement at the end (``offer_emails``)."""

    def __init__(self, rows: dict[str, _Row]) -> None:
        self._rows = rows

    def contact(self, customer_id: str) -> Contact | None:
        row = self._rows.get(customer_id)
        return row.contact if row is not None else None

    def offer(self, offer: EmailOffer) -> None:
        row = self._rows.get(offer.customer_id)
        if row is None:
            contact = Contact(offer.customer_id, None, None, (), offer.email, erased=False)
            self._rows[offer.customer_id] = _Row(contact, offer.at, offer.event_id)
        elif not row.contact.erased and _newer(offer, row.fallback_mark_at, row.fallback_mark_id):
            row.contact = dataclasses.replace(row.contact, fallback_email=offer.email)
            row.fallback_mark_at, row.fallback_mark_id = offer.at, offer.event_id


async def snapshot(conn: asyncpg.Connection, customer_ids: Iterable[str]) -> Snapshot:
    ids = list(set(customer_ids))
    rows = await conn.fetch(_CONTACTS, ids) if ids else []
    return Snapshot(
        {
            row["customer_id"]: _Row(
                Contact(
                    customer_id=row["customer_id"],
                    email=row["email"],
                    name=row["name"],
                    preferred_locales=tuple(row["preferred_locales"]),
                    fallback_email=row["fallback_email"],
                    erased=row["erased"],
                ),
                row["fallback_mark_at"],
                row["fallback_mark_id"],
            )
            for row in rows
        }
    )
