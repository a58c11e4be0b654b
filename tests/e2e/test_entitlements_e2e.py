"""End to end, the whole entitlement path: stripe SDK → localstripe → signed webhooks → the
gateway → billing.events.v1 → the entitlement worker (PostgreSQL, outbox) → the read API
``GET /v1/entitlements`` with a user's bearer token, while subscribing and canceling.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError

from billing_fleet.kafka_admin import topic_partitions
from contracts import (
    BILLING_EVENTS,
    ENTITLEMENT_CHANGES,
    dead_letter_topic,
    parse_entitlement_change,
)
from tests.e2e.conftest import subscribe_with_card
from tests.fleet_settings import FleetSettings
from tests.gateway import Gateway
from tests.jwt_tokens import claims, hs256
from tests.runtime_toy import running, wait_for, worker_settings
from workers.entitlement.worker import NAME, build
from workers.runtime.dlt_admin import read_records

pytestmark = pytest.mark.e2e

FEATURE = "e2e_reports"
CATALOG = """
products:
  e2e_pro:
    prices: [{plan_id}]
    features:
      {feature}: true
      api_calls: 2500
"""


async def start_group_at_end(bootstrap: str, group: str, topic: str) -> None:
    """Commit ``group``'s offsets at the end of ``topic``: the worker sees only what this
    test publishes, not the session's earlier events (whose prices our catalog lacks).

    A commit from outside the group is refused (``CommitFailedError``) once a member ever
    joined it, as the registry's workers, which keep their names from test to test, did
    (test_ledger_e2e's and test_notifications_e2e's invoice worker): then this joins the
    group as its one member to commit."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        assert tps, f"{topic} has no partitions"
        consumer.assign(tps)
        await _commit_end_offsets(consumer, tps)
    except CommitFailedError:
        await _join_and_commit_end(bootstrap, group, topic)
    finally:
        await consumer.stop()


async def _commit_end_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
    # Read on from the end offsets until a fetch comes back empty: Tansu reports the
    # offset of the last record batch, not the one after its last record.
    for tp, offset in (await consumer.end_offsets(tps)).items():
        consumer.seek(tp, offset)
    while await consumer.getmany(*tps, timeout_ms=300):
        pass
    await consumer.commit({tp: await consumer.position(tp) for tp in tps})


async def _join_and_commit_end(bootstrap: str, group: str, topic: str) -> None:
    """As a member of ``group`` (its only one: every partition assigned), then leave."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
        tps = sorted(consumer.assignment())
        assert {tp.partition for tp in tps} == consumer.partitions_for_topic(topic)
        await _commit_end_offsets(consumer, tps)
    finally:
        await consumer.stop()


def create_plan(client: stripe.StripeClient) -> str:
    product = client.v1.products.create(params={"name": "Reports"})
    plan = client.v1.plans.create(
        params={"product": product.id, "amount": 900, "currency": "usd", "interval": "month"}
    )
    return plan.id


def subscribe(client: stripe.StripeClient, plan_id: str, user_id: str) -> tuple[str, str]:
    """A customer of ``user_id`` subscribes to ``plan_id`` with a card: (customer, sub)."""
    customer = client.v1.customers.create(
        params={"email": "e2e@example.com", "metadata": {"user_id": user_id}}
    )
    subscription = subscribe_with_card(client, customer.id, plan_id)
    return customer.id, subscription.id


async def my_entitlements(gateway_url: str, user_id: str) -> dict[str, Any]:
    """The user's entitlements from the read API, by feature."""
    token = hs256(claims(sub=user_id))
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{gateway_url}/v1/entitlements", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["user_id"] == user_id
    return {e["feature"]: e for e in body["entitlements"]}


async def test_subscribing_grants_and_canceling_revokes_through_the_api(
    stripe_client: stripe.StripeClient, gateway: Gateway, settings: FleetSettings, tmp_path: Path
) -> None:
    assert settings.kafka_bootstrap_servers
    bootstrap = settings.kafka_bootstrap_servers
    await start_group_at_end(bootstrap, NAME, BILLING_EVENTS)
    plan_id = await asyncio.to_thread(create_plan, stripe_client)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG.format(plan_id=plan_id, feature=FEATURE))
    settings = worker_settings(settings, entitlement_catalog_path=catalog)
    spec = build(settings)
    assert spec.topics == (BILLING_EVENTS,)
    user_id = f"user-e2e-{uuid.uuid4().hex[:10]}"
    seen: dict[str, Any] = {}

    async def api_shows(present: bool) -> bool:
        seen.clear()
        seen.update(await my_entitlements(gateway.url, user_id))
        return (FEATURE in seen) == present

    async with running(spec, settings):
        customer_id, subscription_id = await asyncio.to_thread(
            subscribe, stripe_client, plan_id, user_id
        )
        await wait_for(lambda: api_shows(True), timeout=20, interval=0.2, message="granted")
        assert seen[FEATURE]["entitled"] is True
        assert seen[FEATURE]["limit"] is None and seen[FEATURE]["expires_at"] is None
        assert seen[FEATURE]["source"] == subscription_id
        assert seen["api_calls"]["limit"] == 2500

        await asyncio.to_thread(stripe_client.v1.subscriptions.cancel, subscription_id)
        await wait_for(lambda: api_shows(False), timeout=20, interval=0.2, message="revoked")
        assert "api_calls" not in seen

    records = await read_records(bootstrap, ENTITLEMENT_CHANGES)
    changes = [parse_entitlement_change(r.value) for r in records if r.key == customer_id.encode()]
    dead = await read_records(bootstrap, dead_letter_topic(BILLING_EVENTS, NAME))
    assert [d for d in dead if d.key == customer_id.encode()] == [], "an event was dead-lettered"
    ours = [c for c in changes if c.feature == FEATURE]
    assert [c.type for c in ours] == ["entitlement.granted", "entitlement.revoked"]
    # The API showed the feature, so the user was known by the time of the cancellation.
    assert ours[1].user_id == user_id and ours[1].sources == []
