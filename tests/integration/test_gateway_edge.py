"""The edge (api_gateway/guard.py): what every route gets applies to the fast paths and to
FastAPI's routes alike. Each test runs the gateway twice, as served (the webhook and the
read API's GETs on their fast paths) and with FastAPI alone answering every route, and
expects the same from both; /healthz is a FastAPI route in both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.gateway import Gateway, free_port, serve_gateway

pytestmark = pytest.mark.integration

LIMIT = 2048  # bytes of body, for every route


def too_large(response: httpx.Response) -> bool:
    return (
        response.status_code == 413
        and response.headers["content-type"] == "application/problem+json"
        and response.json()["detail"] == f"Body exceeds {LIMIT} bytes."
    )


def requests_seen(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("billing_http_request_seconds_count", labels) or 0.0


def webhooks_too_large() -> float:
    labels = {"type": "unknown", "outcome": "too_large"}
    return REGISTRY.get_sample_value("billing_webhooks_received_total", labels) or 0.0


async def chunks(size: int) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked), ``size`` bytes in 512-byte pieces."""
    for start in range(0, size, 512):
        yield b" " * min(512, size - start)


@pytest.fixture(params=[True, False], ids=["fast paths", "FastAPI"])
async def client(gateway: Gateway, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    settings = gateway.settings.model_copy(
        update={"gateway_port": free_port(), "webhook_max_body_bytes": LIMIT}
    )
    async with serve_gateway(settings, fast_paths=request.param):
        url = f"http://127.0.0.1:{settings.gateway_port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield http


async def test_the_body_limit_applies_to_every_route(client: httpx.AsyncClient) -> None:
    over, at = b"{" + b" " * LIMIT + b"}", b" " * LIMIT
    counted, refused = webhooks_too_large(), requests_seen("/webhooks/stripe", "POST", "413")

    declared = await client.post("/webhooks/stripe", content=over)
    streamed = await client.post("/webhooks/stripe", content=chunks(LIMIT + 1))
    read_api = await client.request("GET", "/v1/entitlements", content=over)
    probe = await client.request("GET", "/healthz", content=over)
    probe_at_limit = await client.request("GET", "/healthz", content=at)

    assert all(map(too_large, (declared, streamed, read_api, probe))), [
        (r.status_code, r.text) for r in (declared, streamed, read_api, probe)
    ]
    assert probe_at_limit.status_code == 200
    # The webhook's own series still counts its refused bodies; the HTTP metrics do too.
    assert webhooks_too_large() - counted == 2
    assert requests_seen("/webhooks/stripe", "POST", "413") - refused == 2


async def test_http_metrics_count_every_route_by_its_template(client: httpx.AsyncClient) -> None:
    expected = {  # (route, method, status) -> requests below
        ("/webhooks/stripe", "POST", "400"): 1,  # no signature
        ("/v1/entitlements", "GET", "401"): 1,  # no token
        ("/v1/customers/{customer_id}/entitlements/{feature}", "GET", "401"): 2,
        ("/v1/entitlements/{feature}", "GET", "400"): 1,  # refused by the edge's path guard
        ("/healthz", "GET", "200"): 1,
        ("/healthz", "POST", "405"): 1,
        ("/healthz", "other", "405"): 1,  # a method outside the known set
        ("unmatched", "GET", "404"): 1,
    }
    before = {key: requests_seen(*key) for key in expected}

    statuses = [
        (await client.post("/webhooks/stripe", content=b"{}")).status_code,
        (await client.get("/v1/entitlements")).status_code,
        (await client.get("/v1/customers/cus_a/entitlements/seats")).status_code,
        (await client.get("/v1/customers/cus_b/entitlements/sso")).status_code,
        (await client.get("/v1/entitlements/a%00b")).status_code,
        (await client.get("/healthz")).status_code,
        (await client.post("/healthz")).status_code,
        (await client.request("PROPFIND", "/healthz")).status_code,
        (await client.get("/no/such/route")).status_code,
    ]

    assert statuses == [400, 401, 401, 401, 400, 200, 405, 405, 404]
    assert {key: requests_seen(*key) - before[key] for key in expected} == expected
