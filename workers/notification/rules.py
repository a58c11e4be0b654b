"""Pure decisions: which notices an event makes, which address and locale they go to,
and the keys that make each one exactly once. No I/O, no clock.

Each event is judged on its own, never against what came before it, so any delivery
order decides the same notices (only whether an address is known yet may differ):

==========================  ==========================================================
notice                      when
==========================  ==========================================================
``receipt``                 ``receipt.issued`` on invoices.v1
``payment_failed``          ``invoice.payment_failed`` on invoices.v1 (a failed attempt
                            left the invoice open; the ledger emits it once per attempt)
``trial_ending``            ``subscription.trial_will_end``
``cancellation_scheduled``  ``subscription.updated`` that changed ``cancel_at_period_end``
                            or ``cancel_at`` and left a cancellation at period end
``subscription_ended``      ``subscription.canceled``
``access_granted``          ``entitlement.granted`` (off by default)
``access_revoked``          ``entitlement.revoked`` (off by default)
==========================  ==========================================================

Dunning comes from invoices.v1 rather than billing.events.v1's ``invoice.payment_failed``:
the ledger orders an invoice's events (a failure that Stripe delivers after the invoice
was paid emits nothing there), so a paid customer is never told to pay again.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from typing import Final, Literal
from urllib.parse import quote

from babel import Locale, UnknownLocaleError

from contracts import (
    BillingEvent,
    CheckoutEvent,
    Customer,
    CustomerEvent,
    EntitlementChange,
    InvoiceEvent,
    LedgerEvent,
    LedgerInvoiceEvent,
    ReceiptIssuedEvent,
    SubscriptionEvent,
)
from workers.notification.facts import (
    AccessFacts,
    Facts,
    LineFacts,
    PaymentFailedFacts,
    ReceiptFacts,
    SubscriptionFacts,
)
from workers.notification.keys import address_digest
from workers.notification.notices import NoticeKind

DEFAULT_LOCALE: Final = "en"
"""The locale every notice has templates in, and what a customer without a matching
preference gets."""

SkipReason = Literal["no_email", "customer_deleted", "invalid_email"]

CANCELLATION_FIELDS: Final = frozenset({"cancel_at_period_end", "cancel_at"})
"""Stripe fields whose change (``previous_attributes``) schedules a cancellation."""

CUSTOMER_EVENT_RANK: Final = {"customer.created": 0, "customer.updated": 1, "customer.deleted": 2}
"""Precedence of customer events within one second (a deletion is the last word)."""

LOCALE_KEYS: Final = ("preferred_locales", "locale")
"""Customer metadata keys read for preferred locales, in order: the contract's customer
does not carry Stripe's ``preferred_locales``, so an application that wants localized
mails sets ``metadata.preferred_locales`` (e.g. ``"de-CH,fr"``) or ``metadata.locale``."""
MAX_LOCALES: Final = 5
_LOCALE_TAG: Final = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOMS: Final = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*")
"""RFC 5322's dot-atom ``local@domain``: addresses the email package's parser takes as
they are (tests/unit/test_notification_rules.py checks it agrees)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice an event makes, before its recipient is known."""

    kind: NoticeKind
    event_id: str
    """The consumed event's idempotency id (a Stripe event id, a ledger or change uuid)."""
    customer_id: str | None
    email: str | None
    """The address the event itself carries (a receipt's, an invoice's), if any."""
    name: str | None
    """The customer name the event itself carries, if any."""
    facts: Facts


@dataclass(frozen=True, slots=True)
class Contact:
    """A customer as the directory knows them."""

    customer_id: str
    email: str | None
    """From the newest ``customer.*`` event."""
    name: str | None
    preferred_locales: tuple[str, ...]
    fallback_email: str | None
    """From the newest checkout, invoice or receipt naming the customer."""
    erased: bool
    """A ``customer.deleted`` came: no contact data is kept, no mail is sent."""


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    name: str | None
    preferred_locales: tuple[str, ...]
    key: str
    """What the idempotency key names the recipient by: the customer id, else a digest of
    the address (so the key, which the delivery log keeps, never holds the address)."""


@dataclass(frozen=True, slots=True)
class Skip:
    reason: SkipReason
    recipient: str
    """The customer id, or empty when the event names none."""


@dataclass(frozen=True, slots=True)
class EmailOffer:
    """An address an event carries for a customer: the directory's fallback."""

    customer_id: str
    email: str
    at: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class CustomerUpdate:
    """What a ``customer.*`` event tells the directory, with its newest-wins mark."""

    customer_id: str
    email: str | None
    name: str | None
    user_id: str | None
    preferred_locales: tuple[str, ...]
    deleted: bool
    mark_at: datetime
    mark_rank: int
    mark_id: str


# -- notices --------------------------------------------------------------------------------


def billing_notices(event: BillingEvent, enabled: Collection[NoticeKind]) -> list[Notice]:
    """The notices a ``billing.events.v1`` event makes (subscriptions only)."""
    if not isinstance(event, SubscriptionEvent):
        return []
    kind = _subscription_notice(event)
    if kind is None or kind not in enabled:
        return []
    sub = event.subscription
    cancellation = sub.cancellation
    ends_at: datetime | None
    if kind == "trial_ending":
        ends_at = sub.trial_end
    elif kind == "cancellation_scheduled":
        ends_at = (cancellation.effective_at if cancellation else None) or sub.current_period_end
    else:
        effective = cancellation.effective_at if cancellation else None
        ends_at = effective or sub.canceled_at or event.occurred_at
    facts = SubscriptionFacts(
        subscription_id=sub.id,
        status=sub.status,
        ends_at=ends_at,
        plans=tuple(item.lookup_key or item.price_id for item in sub.items),
    )
    return [Notice(kind, event.source.stripe_event_id, event.customer_id, None, None, facts)]


def _subscription_notice(event: SubscriptionEvent) -> NoticeKind | None:
    if event.type == "subscription.trial_will_end":
        return "trial_ending"
    if event.type == "subscription.canceled":
        return "subscription_ended"
    cancellation = event.subscription.cancellation
    if (
        event.type == "subscription.updated"
        and cancellation is not None
        and cancellation.mode == "at_period_end"
        and CANCELLATION_FIELDS & set(event.subscription.changed_fields)
    ):
        return "cancellation_scheduled"
    return None


def ledger_notices(
    event: LedgerEvent, enabled: Collection[NoticeKind], receipt_url: str | None
) -> list[Notice]:
    """The notices an ``invoices.v1`` event makes; ``receipt_url`` is the
    ``notification_receipt_url`` setting (``{number}`` in it)."""
    event_id = str(event.id)
    if isinstance(event, ReceiptIssuedEvent) and "receipt" in enabled:
        receipt = event.receipt
        facts: Facts = ReceiptFacts(
            number=receipt.number,
            amount=receipt.amount,
            currency=receipt.currency,
            paid_at=receipt.paid_at,
            invoice_number=receipt.invoice_number,
            description=receipt.description,
            lines=tuple(LineFacts(ln.description, ln.quantity, ln.amount) for ln in receipt.lines),
            hosted_invoice_url=receipt.hosted_invoice_url,
            pdf_url=receipt_pdf_url(receipt_url, receipt.number),
            payment_method_type=receipt.payment_method_type,
            card_brand=receipt.card_brand,
            card_last4=receipt.card_last4,
        )
        customer = event.customer_id or receipt.customer_id
        return [
            Notice(
                "receipt", event_id, customer, receipt.customer_email, receipt.customer_name, facts
            )
        ]
    if (
        isinstance(event, LedgerInvoiceEvent)
        and event.type == "invoice.payment_failed"
        and "payment_failed" in enabled
    ):
        invoice = event.invoice
        facts = PaymentFailedFacts(
            invoice_id=invoice.id,
            invoice_number=invoice.number,
            amount_due=invoice.amount_remaining,  # what is still owed, after any part paid
            currency=invoice.currency,
            attempt_count=invoice.attempt_count,
            next_payment_attempt=invoice.next_payment_attempt,
            update_url=invoice.hosted_invoice_url,
        )
        customer = event.customer_id or invoice.customer_id
        return [Notice("payment_failed", event_id, customer, invoice.customer_email, None, facts)]
    return []


def change_notices(change: EntitlementChange, enabled: Collection[NoticeKind]) -> list[Notice]:
    """The notices an ``entitlements.changes.v1`` change makes (updates make none)."""
    kinds: dict[str, NoticeKind] = {
        "entitlement.granted": "access_granted",
        "entitlement.revoked": "access_revoked",
    }
    kind = kinds.get(change.type)
    if kind is None or kind not in enabled:
        return []
    facts = AccessFacts(feature=change.feature, limit=change.limit, expires_at=change.expires_at)
    return [Notice(kind, str(change.id), change.customer_id, None, None, facts)]


def receipt_pdf_url(template: str | None, number: str) -> str | None:
    if not template:
        return None
    return template.replace("{number}", quote(number, safe=""))


# -- the directory ----------------------------------------------------------------------------


def customer_update(event: CustomerEvent) -> CustomerUpdate:
    customer = event.customer
    deleted = customer.deleted or event.type == "customer.deleted"
    return CustomerUpdate(
        customer_id=customer.id,
        email=None if deleted else (customer.email or None),
        name=None if deleted else (customer.name or None),
        user_id=customer.user_id,
        preferred_locales=preferred_locales_of(customer),
        deleted=deleted,
        mark_at=event.occurred_at,
        mark_rank=CUSTOMER_EVENT_RANK[event.type],
        mark_id=event.source.stripe_event_id,
    )


def email_offer(event: BillingEvent | LedgerEvent) -> EmailOffer | None:
    """The address a checkout, invoice or receipt carries for its customer, if both are
    there."""
    customer_id: str | None
    email: str | None
    if isinstance(event, CheckoutEvent):
        customer_id, email = event.customer_id, event.checkout.customer_email
        event_id = event.source.stripe_event_id
    elif isinstance(event, InvoiceEvent):
        customer_id, email = event.customer_id, event.invoice.customer_email
        event_id = event.source.stripe_event_id
    elif isinstance(event, LedgerInvoiceEvent):
        customer_id = event.customer_id or event.invoice.customer_id
        email, event_id = event.invoice.customer_email, str(event.id)
    elif isinstance(event, ReceiptIssuedEvent):
        customer_id = event.customer_id or event.receipt.customer_id
        email, event_id = event.receipt.customer_email, str(event.id)
    else:
        return None
    if not customer_id or not email:
        return None
    return EmailOffer(customer_id, email, event.occurred_at, event_id)


def preferred_locales_of(customer: Customer) -> tuple[str, ...]:
    """The customer's preferred locales from its metadata (``LOCALE_KEYS``), normalized to
    lower-case BCP 47 tags (``de_CH`` is ``de-ch``); what is no tag is dropped."""
    for key in LOCALE_KEYS:
        raw = customer.metadata.get(key)
        if raw:
            tags = (part.strip().lower().replace("_", "-") for part in re.split(r"[,\s]+", raw))
            found = [tag for tag in tags if _LOCALE_TAG.match(tag)]
            return tuple(dict.fromkeys(found))[:MAX_LOCALES]
    return ()


# -- recipients, locales, keys ---------------------------------------------------------------


def recipient_for(notice: Notice, contact: Contact | None) -> Recipient | Skip:
    """Where ``notice`` goes: the address of the customer's newest ``customer.*`` event,
    else the one the event carries, else the directory's fallback (a checkout's or an
    invoice's); or why it cannot go anywhere."""
    customer_key = notice.customer_id or ""
    if contact is not None and contact.erased:
        return Skip("customer_deleted", customer_key)
    address = (contact.email if contact else None) or notice.email
    if address is None and contact is not None:
        address = contact.fallback_email
    if not address:
        return Skip("no_email", customer_key)
    if not valid_address(address):
        return Skip("invalid_email", customer_key)
    # One line: the name is the To header's display name, and Stripe takes any text.
    name = " ".join(((contact.name if contact else None) or notice.name or "").split())
    return Recipient(
        address=address,
        name=name or None,
        preferred_locales=contact.preferred_locales if contact else (),
        key=notice.customer_id or address_digest(address),
    )


def valid_address(address: str) -> bool:
    """Whether ``address`` is one ASCII ``local@domain`` a mail can be sent to."""
    if not address.isascii():
        return False
    if _DOT_ATOMS.fullmatch(address):  # nearly every address, without the parser's cost
        return True
    try:
        parsed = Address(addr_spec=address)
    except Exception:  # the email package raises several types for a malformed address
        return False
    return bool(parsed.username and parsed.domain)


def choose_locale(preferred: Iterable[str], available: Collection[str]) -> tuple[str, str]:
    """(template locale, formatting locale): the first preferred tag, or its language,
    that has templates; amounts and dates are then written in the preferred tag itself
    when Babel knows it (``de-ch`` with ``de`` templates formats as ``de_CH``). Without a
    match: the default locale for both."""
    for tag in preferred:
        language = tag.split("-")[0]
        for candidate in (tag, language):
            if candidate in available:
                return candidate, babel_locale(tag) or babel_locale(candidate) or DEFAULT_LOCALE
    return DEFAULT_LOCALE, DEFAULT_LOCALE


def babel_locale(tag: str) -> str | None:
    """``tag`` as a Babel locale identifier (``de-ch`` → ``de_CH``), None if unknown."""
    try:
        locale = Locale.parse(tag, sep="-")
    except (UnknownLocaleError, ValueError, TypeError):
        return None
    # Babel replaces a region it has no data for with the language's likeliest one
    # (de-zz is de_DE): that is not what the customer asked for.
    if str(locale).lower().replace("_", "-") != tag.lower():
        return None
    return str(locale)
