"""A localstripe server per module, and a stripe SDK client whose webhooks reach the gateway."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import stripe

from tests.gateway import Gateway, free_port
from tests.stripe_fixtures import PRIMARY_SECRET


@pytest.fixture(scope="module")
def localstripe() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        # --from-scratch: no state of an earlier run (it keeps /tmp/localstripe.pickle).
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/v1/customers", auth=("sk_test_e2e", ""), timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise RuntimeError("localstripe exited") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
async def stripe_client(localstripe: str, gateway: Gateway) -> AsyncIterator[stripe.StripeClient]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{localstripe}/_config/webhooks/billing-fleet",
            data={"url": f"{gateway.url}/webhooks/stripe", "secret": PRIMARY_SECRET},
        )
        response.raise_for_status()
    yield stripe.StripeClient("sk_test_e2e", base_addresses={"api": localstripe})


def subscribe_with_card(
    client: stripe.StripeClient, customer_id: str, plan_id: str
) -> stripe.Subscription:
    """What a customer does at checkout: attach a card, make it the default, subscribe."""
    card = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(card.id, params={"customer": customer_id})
    client.v1.customers.update(
        customer_id, params={"invoice_settings": {"default_payment_method": card.id}}
    )
    return client.v1.subscriptions.create(
        params={"customer": customer_id, "items": [{"plan": plan_id}]}
    )
