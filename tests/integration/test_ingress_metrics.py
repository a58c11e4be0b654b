"""Metric labels of the ingress stay bounded whatever signed bodies say."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.gateway import Gateway, free_port, serve_gateway
from tests.stripe_fixtures import load_event, signed

pytestmark = pytest.mark.integration

MADE_UP = 300
HUGE = "x" * 500_000


@pytest.fixture
async def roomy_gateway(gateway: Gateway) -> AsyncIterator[Gateway]:
    """A second gateway on the same broker that takes bodies of 1 MiB (the default)."""
    settings = gateway.settings.model_copy(
        update={"webhook_max_body_bytes": 1_048_576, "gateway_port": free_port()}
    )
    async with serve_gateway(settings) as app:
        assert await app.state.publisher.wait_connected(10)
        yield Gateway(f"http://127.0.0.1:{settings.gateway_port}", settings)


def series(metrics: str, name: str) -> set[str]:
    """The series of ``name`` in a scrape: name and labels, without the value."""
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line.startswith(name + "{")}


async def post_all(url: str, events: list[dict[str, Any]]) -> list[int]:
    limit = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def post(event: dict[str, Any]) -> int:
            body, headers = signed(event)
            async with limit:
                response = await client.post("/webhooks/stripe", content=body, headers=headers)
            return response.status_code

        return list(await asyncio.gather(*(post(event) for event in events)))


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        return (await client.get("/metrics")).text


async def test_made_up_types_and_api_versions_do_not_grow_series(
    roomy_gateway: Gateway,
) -> None:
    before = await scrape(roomy_gateway.url)
    versions = []
    for i in range(MADE_UP):
        event = load_event("customer.subscription.created__syncengine__1")
        event["api_version"] = f"2099-01-{i:03d}.made-up"
        versions.append(event)
    versions[0]["api_version"] = HUGE
    types = []
    for i in range(MADE_UP):
        event = load_event("product.created__syncengine__1")
        event["type"] = f"made.up.type_{i}"
        types.append(event)
    types[0]["type"] = HUGE
    known = load_event("product.created__syncengine__1")  # a type Stripe publishes

    statuses = await post_all(roomy_gateway.url, [*versions, *types, known])

    assert set(statuses) == {200}, statuses  # the huge ones too: published or ignored
    after = await scrape(roomy_gateway.url)
    mismatches = "billing_webhook_api_version_mismatches_total"
    received = "billing_webhooks_received_total"
    new_versions = series(after, mismatches) - series(before, mismatches)
    new_received = series(after, received) - series(before, received)
    # At most one new series each: the made-up values are all counted as "other".
    assert len(new_versions) <= 1, new_versions
    assert f'{mismatches}{{api_version="other"}} ' in after
    assert f'{received}{{outcome="ignored",type="other"}} ' in after
    assert f'{received}{{outcome="ignored",type="product.created"}} ' in after
    assert len(new_received) <= 3, new_received  # other/ignored, product.created, published
    assert len(after) < len(before) + 2_000
    assert "made-up" not in after and "made.up" not in after
    assert max(len(line) for line in after.splitlines()) < 500
