"""The ingress refuses, with 422, what no worker could apply (issue 8, item 4): through the
real gateway, each case answers problem+json naming the field and why, and publishes
nothing (Stripe retries, and its dashboard shows the detail)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts import BILLING_EVENTS
from tests.gateway import Gateway, read_topic, records_for
from tests.stripe_fixtures import load_event, signed

pytestmark = pytest.mark.integration


def _item(obj: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = obj["items"]["data"][0]
    return item


def _drop(obj: dict[str, Any], *keys: str) -> None:
    for key in keys:
        obj.pop(key, None)


CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "subscription-without-customer": (
        lambda obj: obj.update(customer=None),
        "event: customer_id: required, but missing (null)",
    ),
    "nul-in-customer-id": (
        lambda obj: obj.update(customer="cus_\x00IhGfebO16cMIGN"),
        "event: customer_id: contains NUL",
    ),
    "quantity-beyond-bigint": (
        lambda obj: _item(obj).update(quantity=2**63),
        "event.data.object.items.data[0]: quantity: Input should be less than or equal to",
    ),
    "negative-quantity": (
        lambda obj: _item(obj).update(quantity=-50),
        "event.data.object.items.data[0]: quantity: Input should be greater than or equal to 0",
    ),
    "items-missing": (
        lambda obj: _drop(obj, "items", "plan"),
        "event.data.object: items: List should have at least 1 item",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_what_no_worker_can_apply_is_422_and_not_published(
    gateway: Gateway, kafka: Any, case: str
) -> None:
    change, detail = CASES[case]
    event = load_event("customer.subscription.created__syncengine__1")
    change(event["data"]["object"])
    body, headers = signed(event)

    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        response = await client.post("/webhooks/stripe", content=body, headers=headers)
        metrics = (await client.get("/metrics")).text

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert detail in problem["detail"]
    assert "cus_\x00" not in problem["detail"]  # the value itself is never echoed
    assert records_for(await read_topic(kafka.bootstrap_servers, BILLING_EVENTS), event["id"]) == []
    assert (
        'billing_webhooks_received_total{outcome="unmappable",'
        'type="customer.subscription.created"}' in metrics
    )


async def test_the_same_event_within_the_contract_is_published(
    gateway: Gateway, kafka: Any
) -> None:
    """The anchor: the fixture the cases above change is accepted as it is."""
    event = load_event("customer.subscription.created__syncengine__1")
    body, headers = signed(event)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        response = await client.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text
    records = await read_topic(kafka.bootstrap_servers, BILLING_EVENTS)
    assert len(records_for(records, event["id"])) == 1
