"""The notification worker's handlers, one per consumed topic.

- ``billing.events.v1``: ``customer.*`` events keep the directory (newest wins;
  ``customer.deleted`` erases), checkouts and invoices offer their address as the
  customer's fallback; subscription events make the trial, cancellation and end notices.
- ``invoices.v1``: invoices and receipts offer their address; ``receipt.issued`` makes the
  receipt, ``invoice.payment_failed`` the dunning notice; every event is announced to the
  webhook endpoints that want its type.
- ``entitlements.changes.v1``: access notices (off by default) and announcements.

A notice becomes one mail ``Delivery`` per recipient (``rules.recipient_for``), keyed
``<notice>:<event id>:<recipient>``, or a recorded skip when no address can be used.
A batch handler locks the customers whose directory rows its events write (in sorted
order: two topics write the same rows from concurrent transactions), then applies each
event in turn, exactly as ``handle`` would one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from billing_fleet.logs import one_line
from billing_fleet.masking import mask_email
from contracts import (
    BILLING_EVENTS,
    ENTITLEMENT_CHANGES,
    INVOICES,
    BillingEvent,
    CustomerEvent,
    EntitlementChange,
    LedgerEvent,
)
from workers.notification import directory
from workers.notification.announce import WebhookEndpoints, announcements
from workers.notification.keys import notice_key
from workers.notification.mail import MailIdentity, compose
from workers.notification.notices import EMAIL_CHANNEL, TRANSACTIONAL, NoticeKind
from workers.notification.rules import (
    Contact,
    Notice,
    Skip,
    billing_notices,
    change_notices,
    customer_update,
    email_offer,
    ledger_notices,
    recipient_for,
)
from workers.notification.skips import record_skip
from workers.notification.templates import CustomerView, NoticeTemplates
from workers.runtime.deliveries.model import Delivery
from workers.runtime.spec import Effect, Poison

log = logging.getLogger(__name__)


class NotificationHandler:
    def __init__(
        self,
        *,
        templates: NoticeTemplates,
        identity: MailIdentity,
        common: Mapping[str, Any],
        enabled: frozenset[NoticeKind],
        receipt_url: str | None,
        endpoints: WebhookEndpoints,
        clock: Callable[[], datetime],
    ) -> None:
        self.templates = templates
        self.identity = identity
        self.common = dict(common)
        self.enabled = enabled
        self.receipt_url = receipt_url
        self.endpoints = endpoints
        self.clock = clock

    # -- billing.events.v1 -------------------------------------------------------------------

    async def handle_billing(self, conn: asyncpg.Connection, event: BillingEvent) -> list[Effect]:
        return await self.handle_billing_batch(conn, [event])

    async def handle_billing_batch(
        self, conn: asyncpg.Connection, events: Sequence[BillingEvent]
    ) -> list[Effect]:
        await directory.lock(conn, _written_customers(events))
        effects: list[Effect] = []
        for event in events:
            if isinstance(event, CustomerEvent):
                await directory.apply_customer(conn, customer_update(event))
            elif offer := email_offer(event):
                await directory.offer_email(conn, offer)
            for notice in billing_notices(event, self.enabled):
                effects += await self._notify_now(conn, BILLING_EVENTS, notice)
        return effects

    # -- invoices.v1 -------------------------------------------------------------------------

    async def handle_ledger(self, conn: asyncpg.Connection, event: LedgerEvent) -> list[Effect]:
        return await self.handle_ledger_batch(conn, [event])

    async def handle_ledger_batch(
        self, conn: asyncpg.Connection, events: Sequence[LedgerEvent]
    ) -> list[Effect]:
        # Only fallback addresses change here: the batch reads its customers' rows once,
        # applies its offers in memory as it goes, and writes them in one statement.
        offers = [email_offer(event) for event in events]
        notices = [ledger_notices(event, self.enabled, self.receipt_url) for event in events]
        written = [offer.customer_id for offer in offers if offer is not None]
        await directory.lock(conn, written)
        read = [n.customer_id for batch in notices for n in batch if n.customer_id]
        view = await directory.snapshot(conn, [*written, *read])
        effects: list[Effect] = []
        for event, offer, made in zip(events, offers, notices, strict=True):
            if offer is not None:
                view.offer(offer)
            for notice in made:
                contact = view.contact(notice.customer_id) if notice.customer_id else None
                effects += await self._notify(conn, INVOICES, notice, contact)
            effects += announcements(self.endpoints, INVOICES, event)
        await directory.offer_emails(conn, [offer for offer in offers if offer is not None])
        return effects

    # -- entitlements.changes.v1 ---------------------------------------------------------------

    async def handle_change(
        self, conn: asyncpg.Connection, change: EntitlementChange
    ) -> list[Effect]:
        effects: list[Effect] = []
        for notice in change_notices(change, self.enabled):
            effects += await self._notify_now(conn, ENTITLEMENT_CHANGES, notice)
        effects += announcements(self.endpoints, ENTITLEMENT_CHANGES, change)
        return effects

    # -- one notice --------------------------------------------------------------------------------

    async def _notify_now(
        self, conn: asyncpg.Connection, topic: str, notice: Notice
    ) -> list[Effect]:
        """``_notify`` with its customer's row read now."""
        customer = notice.customer_id
        contact = await directory.contact(conn, customer) if customer else None
        return await self._notify(conn, topic, notice, contact)

    async def _notify(
        self, conn: asyncpg.Connection, topic: str, notice: Notice, contact: Contact | None
    ) -> list[Effect]:
        """The notice's delivery to ``contact`` (its customer's row), or its skip recorded."""
        chosen = recipient_for(notice, contact)
        if isinstance(chosen, Skip):
            await record_skip(conn, topic, notice, chosen)
            return []
        key = notice_key(notice.kind, notice.event_id, chosen.key)
        try:
            rendered = self.templates.render(
                notice.kind,
                chosen.preferred_locales,
                notice.facts,
                CustomerView(name=chosen.name, email=chosen.address),
                self.common,
            )
        except Exception as exc:  # e.g. an unknown currency: the event's data, not an outage
            raise Poison(f"notice {notice.kind} does not render: {one_line(exc)}") from exc
        payload = compose(
            identity=self.identity,
            to_address=chosen.address,
            to_name=chosen.name,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            idempotency_key=key,
            optional=notice.kind not in TRANSACTIONAL,
            date=self.clock(),
        )
        log.debug(
            "notice queued",
            extra={"notice": notice.kind, "to": mask_email(chosen.address), "key": key},
        )
        return [
            Delivery(
                channel=EMAIL_CHANNEL,
                destination=chosen.address,
                idempotency_key=key,
                payload=payload,
                metadata={
                    "notice": notice.kind,
                    "locale": rendered.locale,
                    "envelope_from": self.identity.sender,
                },
            )
        ]


def _written_customers(events: Iterable[BillingEvent | LedgerEvent]) -> list[str]:
    """The customers whose directory rows these events write."""
    found: list[str] = []
    for event in events:
        if isinstance(event, CustomerEvent):
            found.append(event.customer.id)
        elif offer := email_offer(event):
            found.append(offer.customer_id)
    return found
