"""End to end, the notification mails: stripe SDK → localstripe → signed webhooks → the
gateway → billing.events.v1 → ``billing-fleet worker invoice`` (ledger, receipts) →
invoices.v1 → ``billing-fleet worker notification`` (both the registry's, as processes) →
a real SMTP server (aiosmtpd) receiving the receipt and the dunning mail.

What localstripe emits for a declined card (found by running it): a subscription whose
first invoice is charged to 4000000000000341 (declined at charge) sends only
``invoice.created`` and ``customer.subscription.created``: the invoice's failed payment
sends no event at all. Only a payment intent confirmed by the API reports a failure
(``payment_intent.payment_failed``, and ``invoice.payment_failed`` when the intent is an
invoice's, as after a 3-D Secure card's authentication), and localstripe's invoices have
no ``hosted_invoice_url``. The dunning mail comes from the ledger's
``invoice.payment_failed``, which a billing ``invoice.payment_failed`` causes; so this
test posts that event, signed, as Stripe sends it for the declined subscription: the
invoice object exactly as localstripe returns it, with the hosted invoice URL Stripe
gives every finalized invoice.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import stripe

from billing_fleet.kafka_admin import ensure_topics
from billing_fleet.money import format_money
from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES
from tests.cli_support import running_worker
from tests.e2e.conftest import subscribe_with_card
from tests.e2e.test_entitlements_e2e import create_plan, start_group_at_end
from tests.e2e.test_ledger_e2e import (
    DECLINED_AT_CHARGE,
    PLAN_AMOUNT,
    invoice_worker,
    post_webhook,
    stripe_event,
)
from tests.fleet_settings import FleetSettings
from tests.gateway import Gateway
from tests.integration.test_runtime_process import start_worker
from tests.notification_support import mail_parts
from tests.runtime_toy import wait_for
from tests.smtp_server import MailServer, Received
from workers.notification.declaration import DECLARATION as NOTIFICATION

pytestmark = pytest.mark.e2e

COMPANY = "Acme Billing"
MAIL_FROM = "billing@acme.example"


@asynccontextmanager
async def notification_worker(
    settings: FleetSettings, log: Path, mail: MailServer, receipt_url: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``billing-fleet worker notification`` as the registry declares it (its three
    topics, the real SMTP channel to ``mail``), its consumer groups at the end of their
    topics; ready; SIGTERM at the end, exit code 0."""
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    # Nobody may have written invoices.v1 or entitlements.changes.v1 yet in this session.
    await ensure_topics(
        bootstrap,
        [INVOICES, ENTITLEMENT_CHANGES],
        settings.kafka_topic_partitions,
        settings.kafka_topic_replication_factor,
    )
    name = NOTIFICATION.name
    for topic in NOTIFICATION.consumes:
        # The runtime's consumer groups: the bare name for the first topic, name@topic after.
        group = name if topic == BILLING_EVENTS else f"{name}@{topic}"
        await start_group_at_end(bootstrap, group, topic)
    process, port = start_worker(
        settings,
        log,
        TOY_NAME=name,
        BILLING_WORKER_DECLARATION="",  # the registry's own notification worker
        BILLING_NOTIFICATION_SMTP_HOST="127.0.0.1",
        BILLING_NOTIFICATION_SMTP_PORT=str(mail.port),
        BILLING_NOTIFICATION_SMTP_TIMEOUT_SECONDS="5",
        BILLING_NOTIFICATION_MAIL_FROM=MAIL_FROM,
        BILLING_NOTIFICATION_COMPANY_NAME=COMPANY,
        BILLING_NOTIFICATION_RECEIPT_URL=receipt_url,
        BILLING_DELIVERY_POLL_SECONDS="0.2",
    )
    async with running_worker(process, port, log):
        yield process


@asynccontextmanager
async def mail_server() -> AsyncIterator[MailServer]:
    with MailServer() as server:
        yield server


def subscribe_paying(client: stripe.StripeClient, email: str, plan_id: str) -> str:
    """A customer who subscribes with a card that pays; the customer's id."""
    customer = client.v1.customers.create(params={"email": email, "name": "Ada Lovelace"})
    subscribe_with_card(client, customer.id, plan_id)
    return str(customer.id)


def customer_with_card(client: stripe.StripeClient, email: str, number: str) -> str:
    """A customer with card ``number`` as the default payment method."""
    customer = client.v1.customers.create(params={"email": email, "name": "Ada Lovelace"})
    card = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(card.id, params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": card.id}}
    )
    return customer.id


def subscribe_declined(client: stripe.StripeClient, email: str, plan_id: str) -> dict[str, Any]:
    """A customer whose card attaches but is declined when the first invoice is charged;
    the subscription stays incomplete. The open invoice as localstripe returns it."""
    customer_id = customer_with_card(client, email, DECLINED_AT_CHARGE)
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer_id,
            "items": [{"plan": plan_id}],
            "payment_behavior": "allow_incomplete",
        }
    )
    assert subscription.status == "incomplete"
    assert isinstance(subscription.latest_invoice, str)
    invoice: dict[str, Any] = client.v1.invoices.retrieve(subscription.latest_invoice).to_dict()
    assert invoice["status"] == "open" and invoice["customer"] == customer_id
    return invoice


async def receipt_number_of(database_url: str, customer_id: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        number: str | None = await conn.fetchval(
            "SELECT number FROM read_v1_receipts WHERE customer_id = $1", customer_id
        )
    finally:
        await conn.close()
    return number


def mails_to(mail: MailServer, address: str) -> list[Received]:
    return [r for r in mail.received if address in r.rcpt_tos]


async def test_a_paid_first_invoice_mails_our_receipt_and_a_declined_card_a_dunning_mail(
    stripe_client: stripe.StripeClient,
    gateway: Gateway,
    settings: FleetSettings,
    database_url: str,
    tmp_path: Path,
) -> None:
    token = uuid.uuid4().hex[:10]
    prefix = f"N{token[:6].upper()}"  # its own receipt sequence in the session database
    paying, declined = f"paying-{token}@example.com", f"declined-{token}@example.com"
    receipt_url = f"{gateway.url}/v1/receipts/{{number}}.pdf"
    plan_id = await asyncio.to_thread(create_plan, stripe_client)
    async with (
        mail_server() as mail,
        notification_worker(settings, tmp_path / "notification.log", mail, receipt_url),
        invoice_worker(settings, tmp_path / "invoice.log", prefix),
    ):
        # -- a paid first invoice: our receipt, numbered by the ledger -------------------
        customer_id = await asyncio.to_thread(subscribe_paying, stripe_client, paying, plan_id)

        async def receipt_mailed() -> bool:
            return bool(mails_to(mail, paying))

        await wait_for(receipt_mailed, timeout=60, interval=0.2, message="the receipt mail")
        number = await receipt_number_of(database_url, customer_id)
        assert number is not None and number.startswith(f"{prefix}-")
        [receipt] = mails_to(mail, paying)
        assert receipt.mail_from == MAIL_FROM and receipt.rcpt_tos == [paying]
        message, text, html = mail_parts(receipt.content)
        assert message["Subject"] == f"Your {COMPANY} receipt {number}"
        assert message["To"].addresses[0].addr_spec == paying
        assert "List-Unsubscribe" not in message  # never on a receipt
        pdf = receipt_url.replace("{number}", number)
        amount = format_money(PLAN_AMOUNT, "usd")  # $9.00
        for part in (text, html):
            assert number in part and amount in part and pdf in part
        assert f"Receipt number: {number}" in text
        assert f"Total paid: {amount}" in text
        assert f'<a href="{pdf}">' in html

        # -- a declined card: the dunning mail with the hosted invoice link --------------
        invoice = await asyncio.to_thread(subscribe_declined, stripe_client, declined, plan_id)
        hosted = f"https://invoice.stripe.com/i/acct_e2e/test_{invoice['id']}"
        failed = {**invoice, "hosted_invoice_url": hosted}
        await post_webhook(gateway, stripe_event("invoice.payment_failed", failed))

        async def dunning_mailed() -> bool:
            return bool(mails_to(mail, declined))

        await wait_for(dunning_mailed, timeout=60, interval=0.2, message="the dunning mail")
        [dunning] = mails_to(mail, declined)
        message, text, html = mail_parts(dunning.content)
        assert message["Subject"] == f"Your payment to {COMPANY} did not go through"
        assert message["To"].addresses[0].addr_spec == declined
        assert invoice["amount_due"] == PLAN_AMOUNT
        assert f"we could not collect {amount}" in text
        assert f"Update your payment method or pay now: {hosted}" in text
        assert hosted in html
        # One mail each: the paying customer got no second receipt meanwhile.
        assert len(mails_to(mail, paying)) == 1
