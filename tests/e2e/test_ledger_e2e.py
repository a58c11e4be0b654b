"""End to end, the invoice ledger: stripe SDK → localstripe → signed webhooks → the
gateway → billing.events.v1 → ``billing-fleet worker invoice`` (a process: ledger,
receipts, the receipt PDF rendered by its ``receipt_pdf`` sender) → the read API with a
user's token and a service's.

localstripe sends no refund or dispute events, so those are Stripe's sample objects
(``tests/fixtures/stripe/objects``) pointed at the paid payment, wrapped in an event and
posted signed to ``/webhooks/stripe`` as Stripe would.

localstripe declines a card in two places: at attach (4000000000000002, the brief's
``pm_card_visa_chargeDeclined``: a 402 and no payment at all) and at charge
(4000000000000341, ``pm_card_chargeCustomerFail``). Only the second makes a payment, and
only a payment intent confirmed on creation reports it (``payment_intent.payment_failed``;
an invoice payment's failure sends no event there), so the declined payment is made so.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import stripe

from billing_fleet.money import format_money
from contracts import BILLING_EVENTS
from tests.cli_support import running_worker
from tests.e2e.conftest import subscribe_with_card
from tests.e2e.test_entitlements_e2e import create_plan, start_group_at_end
from tests.fleet_settings import FleetSettings
from tests.gateway import Gateway
from tests.integration.test_ledger_api import ledger_token
from tests.integration.test_runtime_process import start_worker
from tests.invoice_receipts import pdf_text
from tests.jwt_tokens import claims, hs256
from tests.runtime_toy import wait_for
from tests.stripe_fixtures import load_object, signed
from workers.invoice.worker import NAME

pytestmark = pytest.mark.e2e

PLAN_AMOUNT = 900  # usd cents, create_plan's
DECLINED_AT_CHARGE = "4000000000000341"


@dataclass
class Reader:
    """The read API as a user (``/v1/…``) and as a service (``/v1/customers/{id}/…``)."""

    client: httpx.AsyncClient
    user_id: str
    customer_id: str

    async def mine(self, path: str) -> httpx.Response:
        token = hs256(claims(sub=self.user_id))
        return await self.client.get(f"/v1{path}", headers={"Authorization": f"Bearer {token}"})

    async def as_service(self, path: str) -> httpx.Response:
        token = ledger_token()
        return await self.client.get(
            f"/v1/customers/{self.customer_id}{path}",
            headers={"Authorization": f"Bearer {token}"},
        )

    async def both(self, path: str) -> Any:
        """The JSON of ``path`` for the user; the service's answer must be the same."""
        mine, theirs = await self.mine(path), await self.as_service(path)
        assert mine.status_code == 200, mine.text
        assert theirs.status_code == 200, theirs.text
        assert mine.json() == theirs.json()
        return mine.json()


@asynccontextmanager
async def invoice_worker(
    settings: FleetSettings, log: Path, prefix: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``billing-fleet worker invoice`` as the registry declares it (billing.events.v1,
    the real receipt document sender), ready; SIGTERM at the end, exit code 0."""
    assert settings.kafka_bootstrap_servers
    await start_group_at_end(settings.kafka_bootstrap_servers, NAME, BILLING_EVENTS)
    process, port = start_worker(
        settings,
        log,
        TOY_NAME=NAME,
        BILLING_WORKER_DECLARATION="",  # the registry's own invoice worker
        BILLING_INVOICE_RECEIPT_PREFIX=prefix,
        BILLING_DELIVERY_POLL_SECONDS="0.2",
    )
    async with running_worker(process, port, log):
        yield process


@asynccontextmanager
async def documents_held(url: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A SHARE lock on ``ledger_receipt_documents`` until ``release()`` (or the block's
    end): reads go on, the sender's INSERT of a rendered PDF waits. So the test sees the
    receipt before its PDF whatever the machine's speed (past the sender's 5 s statement
    deadline the send is retried 1 s later)."""
    conn = await asyncpg.connect(url)
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("LOCK TABLE ledger_receipt_documents IN SHARE MODE")
        yield transaction.rollback
    finally:
        await conn.close()  # ends the transaction if release() was not called


def subscribe_paying(client: stripe.StripeClient, plan_id: str, user_id: str) -> tuple[str, str]:
    customer = client.v1.customers.create(
        params={"email": "ledger-e2e@example.com", "metadata": {"user_id": user_id}}
    )
    subscription = subscribe_with_card(client, customer.id, plan_id)
    return customer.id, subscription.id


def pay_with_declined_card(client: stripe.StripeClient, user_id: str) -> tuple[str, str]:
    """A customer whose card attaches but is declined when charged; (customer, intent)."""
    customer = client.v1.customers.create(
        params={"email": "declined@example.com", "metadata": {"user_id": user_id}}
    )
    card = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": DECLINED_AT_CHARGE, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(card.id, params={"customer": customer.id})
    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_intents.create(
            params={
                "amount": 1500,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": card.id,
                "confirm": True,
            }
        )
    assert declined.value.code == "card_declined"
    intents = client.v1.payment_intents.list(params={"limit": 100})
    [intent] = [i for i in intents.data if i.customer == customer.id]
    return customer.id, intent.id


def stripe_event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A Stripe event envelope around ``obj``, as a webhook delivers it."""
    return {
        "id": f"evt_e2e_{uuid.uuid4().hex}",
        "object": "event",
        "type": event_type,
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }


async def post_webhook(gateway: Gateway, event: dict[str, Any]) -> None:
    body, headers = signed(event)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gateway.url}/webhooks/stripe", content=body, headers=headers
        )
    assert response.status_code == 200, response.text


async def test_a_paid_subscription_a_declined_card_a_refund_and_a_dispute_through_the_read_api(
    stripe_client: stripe.StripeClient,
    gateway: Gateway,
    settings: FleetSettings,
    database_url: str,
    tmp_path: Path,
) -> None:
    prefix = f"E{uuid.uuid4().hex[:6].upper()}"  # its own sequences in the session database
    user_id = f"user-ledger-{uuid.uuid4().hex[:10]}"
    plan_id = await asyncio.to_thread(create_plan, stripe_client)
    async with (
        documents_held(database_url) as release_documents,
        invoice_worker(settings, tmp_path / "worker.log", prefix),
        httpx.AsyncClient(base_url=gateway.url) as client,
    ):
        customer_id, subscription_id = await asyncio.to_thread(
            subscribe_paying, stripe_client, plan_id, user_id
        )
        api = Reader(client, user_id, customer_id)

        async def paid_and_receipted() -> bool:
            # localstripe sends the invoice's and the intent's events at once, in any order.
            payments, invoices = await api.mine("/payments"), await api.mine("/invoices")
            if payments.status_code != 200 or invoices.status_code != 200:
                return False
            receipted = any(p["receipt_number"] for p in payments.json()["data"])
            return receipted and any(i["status"] == "paid" for i in invoices.json()["data"])

        await wait_for(paid_and_receipted, timeout=30, interval=0.2, message="paid, receipted")

        # -- the paid invoice, its payment and our receipt -------------------------------
        [paid] = (await api.both("/payments"))["data"]
        assert paid["status"] == "succeeded" and paid["failure_code"] is None
        assert (paid["amount"], paid["currency"]) == (PLAN_AMOUNT, "usd")
        assert paid["customer_id"] == customer_id and paid["account"] is None
        number = paid["receipt_number"]
        assert number.startswith(f"{prefix}-") and number.endswith("-000001")

        invoices = (await api.both("/invoices"))["data"]
        assert [(i["status"], i["amount_paid"], i["currency"]) for i in invoices] == [
            ("paid", PLAN_AMOUNT, "usd")
        ]
        [invoice] = invoices
        assert invoice["subscription_id"] == subscription_id
        assert invoice["payment_intent_id"] == paid["payment_intent_id"]
        assert paid["invoice_id"] == invoice["id"]

        [subscription] = (await api.both("/subscriptions"))["data"]
        assert (subscription["id"], subscription["status"]) == (subscription_id, "active")
        assert subscription["price_id"] == plan_id

        receipt = await api.both(f"/receipts/{number}")
        assert receipt["payment_id"] == paid["id"]
        assert receipt["invoice_id"] == invoice["id"]
        assert (receipt["amount"], receipt["currency"]) == (PLAN_AMOUNT, "usd")

        # -- the PDF: 503 until rendered and stored, then the document -------------------
        assert receipt["pdf_ready"] is False
        not_yet = await api.mine(f"/receipts/{number}.pdf")
        assert not_yet.status_code == 503, not_yet.text
        assert not_yet.headers["retry-after"] == "5"
        assert not_yet.headers["content-type"].startswith("application/problem+json")
        await release_documents()
        pdf: list[httpx.Response] = []

        async def rendered() -> bool:
            response = await api.mine(f"/receipts/{number}.pdf")
            assert response.status_code in (200, 503), response.text
            pdf[:] = [response]
            return response.status_code == 200

        await wait_for(rendered, timeout=60, interval=0.25, message="the receipt's PDF")
        [document] = pdf
        assert document.headers["content-type"] == "application/pdf"
        service_copy = await api.as_service(f"/receipts/{number}.pdf")
        assert service_copy.status_code == 200 and service_copy.content == document.content
        text = pdf_text(document.content)
        assert number in text
        assert format_money(PLAN_AMOUNT, "usd") in text  # $9.00
        assert "USD" in text
        assert (await api.mine(f"/receipts/{number}")).json()["pdf_ready"] is True

        # -- a declined card: a failed payment with its failure code ---------------------
        declined_customer, declined_intent = await asyncio.to_thread(
            pay_with_declined_card, stripe_client, user_id
        )
        failed: list[dict[str, Any]] = []

        async def declined() -> bool:
            response = await api.mine("/payments")
            failed[:] = [p for p in response.json()["data"] if p["id"] == declined_intent]
            return bool(failed)

        await wait_for(declined, timeout=30, interval=0.2, message="the declined payment")
        [declined_payment] = failed
        assert declined_payment["status"] == "failed"
        assert declined_payment["failure_code"] == "card_declined"
        assert declined_payment["customer_id"] == declined_customer
        assert declined_payment["receipt_number"] is None
        other = Reader(client, user_id, declined_customer)
        [theirs] = (await other.as_service("/payments")).json()["data"]
        assert theirs == declined_payment

        # -- a refund and a dispute of the paid payment, as Stripe would send them -------
        refund = {
            **load_object("refund.json"),
            "id": f"re_e2e_{uuid.uuid4().hex[:14]}",
            "charge": paid["charge_id"],
            "payment_intent": paid["payment_intent_id"],
            "amount": 300,
            "currency": "usd",
            "reason": "requested_by_customer",
            "created": int(time.time()),
        }
        dispute = {
            **load_object("dispute.json"),
            "id": f"dp_e2e_{uuid.uuid4().hex[:14]}",
            "charge": paid["charge_id"],
            "payment_intent": paid["payment_intent_id"],
            "amount": PLAN_AMOUNT,
            "currency": "usd",
            "created": int(time.time()),
        }
        await post_webhook(gateway, stripe_event("refund.created", refund))
        await post_webhook(gateway, stripe_event("charge.dispute.created", dispute))
        seen: list[dict[str, Any]] = []

        async def attached() -> bool:
            response = await api.mine("/payments")
            seen[:] = [p for p in response.json()["data"] if p["id"] == paid["id"]]
            return bool(seen and seen[0]["refunds"] and seen[0]["disputes"])

        await wait_for(attached, timeout=30, interval=0.2, message="the refund and dispute")
        [after] = seen
        # The user reads both customers' payments; the service the one customer's.
        assert (await api.as_service("/payments")).json()["data"] == [after]
        assert [(r["id"], r["amount"], r["currency"], r["status"]) for r in after["refunds"]] == [
            (refund["id"], 300, "usd", "succeeded")
        ]
        assert [(d["id"], d["amount"], d["status"], d["reason"]) for d in after["disputes"]] == [
            (dispute["id"], PLAN_AMOUNT, "warning_needs_response", "general")
        ]
        # A refund keeps the receipt and its number.
        assert after["receipt_number"] == number and after["status"] == "succeeded"
