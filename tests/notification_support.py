"""Helpers for the notification worker's tests: event builders on the contract models and
the Stripe fixtures, the worker's spec with recording channels and a fixed clock (or, for
a worker process against real servers, its real channels), what the runtime does per
event, and the worker's rows read back.

``RecordingSender`` (tests/invoice_support.py) records what the SMTP and signed-webhook
senders would send (their own tests use real servers); ``endpoints_of`` builds a real
``WebhookEndpoints`` (endpoint ids with CloudEvents type globs). Mails are read back by
parsing the payload the worker built, as a receiving server would.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

import asyncpg
from pydantic import SecretStr

import contracts
from api_gateway.normalize import normalize
from contracts import (
    BILLING_EVENTS,
    ENTITLEMENT_CHANGES,
    INVOICES,
    BillingEvent,
    Customer,
    CustomerEvent,
    EntitlementChange,
    InvoiceLine,
    LedgerEvent,
    LedgerInvoice,
    LedgerInvoiceEvent,
    Receipt,
    ReceiptIssuedEvent,
)
from contracts.ledger import LedgerEnvelope
from tests.invoice_support import RecordingSender, source
from tests.stripe_fixtures import load_event
from tests.toy_worker import named_as_toy
from workers.notification.settings import NotificationSettings
from workers.notification.webhooks.endpoints import Endpoint, WebhookEndpoints
from workers.notification.worker import NAME, build
from workers.runtime.processing import apply_one
from workers.runtime.spec import Subscription, WorkerSpec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOTIFICATION = NAME


def fixed_clock() -> datetime:
    return NOW


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- webhook endpoints ----------------------------------------------------------------------


TEST_SECRET = "whsec_" + base64.b64encode(b"a test secret of 24 bytes").decode()


def endpoints_of(endpoints: Mapping[str, Sequence[str]]) -> WebhookEndpoints:
    """Endpoints by id with type filters (globs; empty: every type), as the endpoints
    file holds them, each at an unused loopback URL (recording channels send nothing)."""
    return WebhookEndpoints(
        endpoints=[
            Endpoint(
                id=id,
                url=f"http://127.0.0.1:9/{id}",
                secrets=[SecretStr(TEST_SECRET)],
                events=list(types),
            )
            for id, types in endpoints.items()
        ]
    )


# -- the spec -----------------------------------------------------------------------------------


@dataclass
class Notifier:
    """The worker's spec and its two recording channels."""

    spec: WorkerSpec
    email: RecordingSender
    webhook: RecordingSender


def notifier(
    settings: NotificationSettings | None = None,
    endpoints: WebhookEndpoints | None = None,
    **overrides: Any,
) -> Notifier:
    """``build`` with recording channels, the given endpoints (none by default) and a
    fixed clock; ``overrides`` are settings fields."""
    settings = (settings or NotificationSettings()).model_copy(update=overrides)
    email, webhook = RecordingSender(), RecordingSender()
    spec = build(
        settings,
        channels={"email": email, "webhook": webhook},
        endpoints=endpoints or endpoints_of({}),
        clock=fixed_clock,
    )
    return Notifier(spec, email, webhook)


def build_on_topics(settings: NotificationSettings) -> WorkerSpec:
    """The real worker, as the registry builds it, consuming the test's own topics
    (``TOY_TOPIC``, ``TOY_INVOICES_TOPIC``, ``TOY_CHANGES_TOPIC``, in the declared order),
    with recording channels and one webhook endpoint, ``all``, that wants every type."""
    spec = build(
        settings,
        channels={"email": RecordingSender(), "webhook": RecordingSender()},
        endpoints=endpoints_of({"all": []}),
    )
    return named_as_toy(_on_test_topics(spec))


def build_real_on_topics(settings: NotificationSettings) -> WorkerSpec:
    """The real worker with its real channels (the SMTP relay and the signed webhooks of
    the ``BILLING_NOTIFICATION_*`` settings, the endpoints file's endpoints), consuming the
    test's own topics as ``build_on_topics``. Built under ``TOY_NAME``: the webhook
    sender's 410 bookkeeping and the retention job look at the rows of that name."""
    spec = build(settings, name=os.environ.get("TOY_NAME", NAME))
    return named_as_toy(_on_test_topics(spec))


def _on_test_topics(spec: WorkerSpec) -> WorkerSpec:
    topics = [os.environ[name] for name in ("TOY_TOPIC", "TOY_INVOICES_TOPIC", "TOY_CHANGES_TOPIC")]
    subscriptions = tuple(
        dataclasses.replace(subscription, topic=topic)
        for subscription, topic in zip(spec.subscriptions, topics, strict=True)
    )
    return dataclasses.replace(spec, subscriptions=subscriptions)


def subscription_of(spec: WorkerSpec, topic: str) -> Subscription[Any]:
    [found] = [s for s in spec.subscriptions if s.topic == topic]
    return found


def topic_of(event: BillingEvent | LedgerEvent | EntitlementChange) -> str:
    if isinstance(event, EntitlementChange):
        return ENTITLEMENT_CHANGES
    if isinstance(event, LedgerEnvelope):
        return INVOICES
    return BILLING_EVENTS


def event_id_of(spec: WorkerSpec, event: BillingEvent | LedgerEvent | EntitlementChange) -> str:
    """The id the runtime keys ``event`` by (and the worker's delivery keys name)."""
    return str(subscription_of(spec, topic_of(event)).event_id(event))


async def apply(
    conn: asyncpg.Connection,
    spec: WorkerSpec,
    event: BillingEvent | LedgerEvent | EntitlementChange,
) -> bool:
    """What the runtime does for one event of its topic, in one transaction: the
    idempotency row, the handler when it is new, its deliveries written. False for a
    duplicate."""
    async with conn.transaction():
        out = await apply_one(conn, spec, event, subscription_of(spec, topic_of(event)))
    return out is not None


async def replay(
    conn: asyncpg.Connection,
    spec: WorkerSpec,
    event: BillingEvent | LedgerEvent | EntitlementChange,
) -> None:
    """The event applied again as after its ``processed_events`` row was cleared (a
    replay): the handler runs, its deliveries are written once more."""
    subscription = subscription_of(spec, topic_of(event))
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM processed_events WHERE consumer = $1 AND event_id = $2",
            spec.consumer_key(subscription),
            subscription.event_id(event),
        )
        await apply_one(conn, spec, event, subscription)


# -- rows read back ------------------------------------------------------------------------------


async def deliveries(conn: asyncpg.Connection, channel: str = "email") -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, destination, idempotency_key, payload, headers::text AS headers,"
        " metadata::text AS metadata FROM deliveries"
        " WHERE worker = $1 AND channel = $2 ORDER BY id",
        NOTIFICATION,
        channel,
    )


async def delivery_keys(conn: asyncpg.Connection, channel: str = "email") -> list[str]:
    return [row["idempotency_key"] for row in await deliveries(conn, channel)]


async def skips(conn: asyncpg.Connection) -> list[tuple[str, str, str, str]]:
    """(notice, event id, recipient, reason) of every recorded skip."""
    rows = await conn.fetch(
        "SELECT notice, event_id, recipient, reason FROM notification_skips ORDER BY id"
    )
    return [tuple(row) for row in rows]


async def contact_row(conn: asyncpg.Connection, customer_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM notification_contacts WHERE customer_id = $1", customer_id
    )
    return dict(row) if row is not None else None


def parse_mail(payload: bytes) -> EmailMessage:
    return BytesParser(policy=default).parsebytes(payload)


def mail_parts(payload: bytes) -> tuple[EmailMessage, str, str]:
    """The message, its text part and its HTML part (their line ends as a mail client
    shows them: the payload has SMTP's CRLF)."""
    message = parse_mail(payload)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return (
        message,
        str(text.get_content()).replace("\r\n", "\n"),
        str(html.get_content()).replace("\r\n", "\n"),
    )


# -- events ----------------------------------------------------------------------------------


def fixture_event(
    fixture: str, customer_id: str, *, event_id: str | None = None, **object_fields: Any
) -> BillingEvent:
    """A Stripe fixture as the gateway normalizes it, for ``customer_id`` (a customer
    object's own id, any other object's ``customer``), with ``object_fields`` set on its
    object; its Stripe event id ``event_id``, else a fresh one."""
    raw: dict[str, Any] = load_event(fixture)
    if event_id is not None:
        raw["id"] = event_id
    obj = raw["data"]["object"]
    if obj.get("object") == "customer":
        obj["id"] = customer_id
    else:
        obj["customer"] = customer_id
    obj.update(object_fields)
    return normalize(json.loads(json.dumps(raw)))


def customer_event(
    customer_id: str,
    *,
    email: str | None,
    name: str | None = None,
    occurred_at: datetime,
    event_type: contracts.events.CustomerEventType = "customer.updated",
    metadata: dict[str, str] | None = None,
    event_id: str | None = None,
) -> CustomerEvent:
    stripe_id = event_id or f"evt_{uuid.uuid4().hex}"
    deleted = event_type == "customer.deleted"
    return CustomerEvent(
        id=contracts.event_id_for(stripe_id),
        type=event_type,
        occurred_at=occurred_at,
        source=source(stripe_id),
        customer_id=customer_id,
        customer=Customer(
            id=customer_id,
            email=email,
            name=name,
            user_id=None,
            metadata=metadata or {},
            deleted=deleted,
        ),
    )


def _ledger_envelope(
    event_type: str,
    object_id: str,
    customer_id: str | None,
    occurred_at: datetime,
    cause: str | None,
) -> dict[str, Any]:
    cause = cause or f"evt_{uuid.uuid4().hex}"
    return {
        "id": contracts.ledger_event_id(event_type, object_id, cause),
        "occurred_at": occurred_at,
        "customer_id": customer_id,
        "account": None,
        "livemode": False,
        "caused_by": cause,
    }


def receipt_issued(
    number: str,
    *,
    customer_id: str | None,
    email: str | None,
    amount: int = 2000,
    currency: str = "eur",
    name: str | None = None,
    occurred_at: datetime = NOW,
    lines: Sequence[InvoiceLine] = (),
    cause: str | None = None,
) -> ReceiptIssuedEvent:
    """``receipt.issued`` (caused by Stripe event ``cause``, else a fresh one)."""
    payment_id = f"pi_{number}"
    return ReceiptIssuedEvent(
        type="receipt.issued",
        **_ledger_envelope("receipt.issued", payment_id, customer_id, occurred_at, cause),
        receipt=Receipt(
            number=number,
            payment_id=payment_id,
            invoice_id=f"in_{number}",
            invoice_number=f"INV-{number}",
            customer_id=customer_id,
            customer_email=email,
            customer_name=name,
            amount=amount,
            currency=currency,
            paid_at=occurred_at,
            issued_at=occurred_at,
            lines=list(lines),
            description="Pro plan",
            hosted_invoice_url=f"https://invoice.stripe.test/{number}",
            payment_method_type="card",
            card_brand="visa",
            card_last4="4242",
        ),
    )


def ledger_invoice_event(
    event_type: contracts.ledger.LedgerInvoiceEventType,
    invoice_id: str,
    *,
    customer_id: str | None,
    email: str | None,
    amount: int = 2000,
    currency: str = "eur",
    next_attempt: datetime | None = None,
    occurred_at: datetime = NOW,
    cause: str | None = None,
) -> LedgerInvoiceEvent:
    return LedgerInvoiceEvent(
        type=event_type,
        **_ledger_envelope(event_type, invoice_id, customer_id, occurred_at, cause),
        invoice=LedgerInvoice(
            id=invoice_id,
            customer_id=customer_id,
            number=f"INV-{invoice_id}",
            status="open",
            currency=currency,
            subtotal=amount,
            discount=None,
            tax=None,
            total=amount,
            amount_due=amount,
            amount_paid=0,
            amount_remaining=amount,
            billing_reason="subscription_cycle",
            subscription_id=None,
            payment_intent_id=None,
            charge_id=None,
            attempt_count=1,
            next_payment_attempt=next_attempt,
            due_date=None,
            period_start=None,
            period_end=None,
            paid_at=None,
            hosted_invoice_url=f"https://invoice.stripe.test/{invoice_id}",
            invoice_pdf=None,
            customer_email=email,
            lines=[],
            created_at=occurred_at,
        ),
    )


def entitlement_change(
    change_type: contracts.EntitlementChangeType,
    customer_id: str,
    feature: str,
    *,
    limit: int | None = None,
    occurred_at: datetime = NOW,
    cause: str | None = None,
) -> EntitlementChange:
    cause = cause or f"evt_{uuid.uuid4().hex}"
    return EntitlementChange(
        id=contracts.change_id_for(cause, customer_id, feature),
        type=change_type,
        occurred_at=occurred_at,
        customer_id=customer_id,
        user_id=None,
        feature=feature,
        entitled=change_type != "entitlement.revoked",
        limit=limit,
        expires_at=None,
        sources=["sub_1"],
        caused_by=cause,
    )
