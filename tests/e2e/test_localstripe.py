"""End to end: stripe SDK → localstripe → signed webhooks → ingress → billing.events.v1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import stripe

from contracts import BILLING_EVENTS, BillingEvent, parse_billing_event
from tests.e2e.conftest import subscribe_with_card
from tests.gateway import read_topic

pytestmark = pytest.mark.e2e


def buy_and_cancel(client: stripe.StripeClient) -> tuple[str, str, str]:
    """What a customer does: sign up, subscribe with a card, cancel. Returns ids."""
    customer = client.v1.customers.create(
        params={"email": "jo@example.com", "metadata": {"user_id": "user-42"}}
    )
    product = client.v1.products.create(params={"name": "Pro"})
    plan = client.v1.plans.create(
        params={"product": product.id, "amount": 1500, "currency": "usd", "interval": "month"}
    )
    subscription = subscribe_with_card(client, customer.id, plan.id)
    client.v1.subscriptions.cancel(subscription.id)
    return customer.id, plan.id, subscription.id


async def events_for(
    bootstrap: str, customer_id: str, until: set[str], timeout: float = 20
) -> dict[str, BillingEvent]:
    """Normalized events of one customer, by type, once ``until`` types have all arrived."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records = await read_topic(bootstrap, BILLING_EVENTS)
        events = [parse_billing_event(r.value) for r in records if r.key == customer_id.encode()]
        by_type: dict[str, BillingEvent] = {e.type: e for e in events}
        if until <= by_type.keys() or asyncio.get_running_loop().time() > deadline:
            return by_type
        await asyncio.sleep(0.25)


async def test_subscription_lifecycle_reaches_the_topic(
    stripe_client: stripe.StripeClient, kafka: Any
) -> None:
    customer_id, plan_id, subscription_id = await asyncio.to_thread(buy_and_cancel, stripe_client)

    wanted = {"customer.created", "subscription.activated", "subscription.canceled", "invoice.paid"}
    events = await events_for(kafka.bootstrap_servers, customer_id, wanted)

    assert wanted <= events.keys(), f"got only {sorted(events)}"
    customer = events["customer.created"]
    assert customer.type == "customer.created" and customer.customer.user_id == "user-42"
    activated = events["subscription.activated"]
    assert activated.type == "subscription.activated"
    assert activated.subscription.id == subscription_id
    assert activated.subscription.status == "active"
    assert [item.price_id for item in activated.subscription.items] == [plan_id]
    assert activated.source.api_version == "2017-08-15"
    canceled = events["subscription.canceled"]
    assert canceled.type == "subscription.canceled"
    assert canceled.subscription.cancellation is not None
    assert canceled.subscription.cancellation.mode == "immediately"
    paid = events["invoice.paid"]
    assert paid.type == "invoice.paid" and paid.invoice.amount_paid == 1500
