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
        [sys.executable, "-m", "localstripe", "--port", str(port)],
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
