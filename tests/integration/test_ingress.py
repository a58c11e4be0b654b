"""The Stripe webhook ingress against the real Tansu broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from contracts import BILLING_EVENTS, RefundEvent, event_id_for, parse_billing_event
from fleet.embedded import EmbeddedKafka
from tests.fleet_settings import FleetSettings
from tests.gateway import Gateway, create_topics, free_port, read_topic, records_for, serve_gateway
from tests.runtime_toy import (
    applied,
    metric,
    prepare_tables,
    running,
    toy_spec,
    unique,
    wait_for,
    worker_settings,
)
from tests.stripe_fixtures import SECONDARY_SECRET, load_event, load_object, sign, signed

pytestmark = pytest.mark.integration


async def post(
    gateway: Gateway, body: bytes, headers: Mapping[str, str] | Mapping[bytes, bytes]
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        return await client.post("/webhooks/stripe", content=body, headers=headers)


async def published(kafka: Any, stripe_event_id: str) -> list[Any]:
    return records_for(await read_topic(kafka.bootstrap_servers, BILLING_EVENTS), stripe_event_id)


async def test_signed_event_is_published_once_with_key_headers_and_json(
    gateway: Gateway, kafka: Any
) -> None:
    event = load_event("customer.subscription.created__syncengine__1")
    body, headers = signed(event)
    headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    response = await post(gateway, body, headers)

    assert response.status_code == 200, response.text
    assert response.json()["type"] == "subscription.activated"
    [record] = await published(kafka, event["id"])
    assert record.key == b"cus_IhGfebO16cMIGN"
    header = {k: v.decode() for k, v in record.headers}
    assert header["ce_specversion"] == "1.0"
    assert header["ce_type"] == "subscription.activated"
    assert header["ce_id"] == str(event_id_for(event["id"]))
    assert header["ce_source"] == "/billing-fleet/stripe"
    assert header["ce_time"].endswith("Z")
    assert header["traceparent"] == headers["traceparent"]
    normalized = parse_billing_event(record.value)
    assert normalized.source.stripe_event_id == event["id"]
    assert normalized.customer_id == "cus_IhGfebO16cMIGN"
    assert normalized.type == "subscription.activated"
    assert normalized.subscription.id == event["data"]["object"]["id"]


async def test_refund_event_is_published_keyed_by_its_charge(gateway: Gateway, kafka: Any) -> None:
    # No refund.* fixture exists: Stripe's sample refund (no customer) in a real event.
    event = load_event("charge.refunded__rubymock__1")
    event["type"] = "refund.created"
    event["data"] = {"object": load_object("refund.json")}
    body, headers = signed(event)

    response = await post(gateway, body, headers)

    assert response.status_code == 200, response.text
    assert response.json()["type"] == "refund.created"
    [record] = await published(kafka, event["id"])
    assert record.key == b"ch_1PgafuB7WZ01zgkWXYmPNZs8"
    normalized = parse_billing_event(record.value)
    assert isinstance(normalized, RefundEvent)
    assert (normalized.refund.id, normalized.refund.amount) == ("re_1Pgc72B7WZ01zgkWqPvrRrPE", 100)
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        metrics = (await client.get("/metrics")).text
    assert 'billing_webhooks_received_total{outcome="published",type="refund.created"}' in metrics


async def test_secondary_secret_is_accepted_for_rolling(gateway: Gateway, kafka: Any) -> None:
    event = load_event("invoice.paid__syncengine__1")
    body, headers = signed(event, secret=SECONDARY_SECRET)

    assert (await post(gateway, body, headers)).status_code == 200
    assert len(await published(kafka, event["id"])) == 1


@pytest.mark.parametrize(
    ("make_header", "reason"),
    [
        (lambda body: None, "missing"),
        (lambda body: sign(body, secret="whsec_wrong"), "mismatch"),
        (lambda body: "t=abc,v1=zz", "malformed"),
        (lambda body: sign(body, timestamp=int(time.time()) - 3600), "stale"),
        (lambda body: sign(body, timestamp=int(time.time()) + 3600), "future"),
        (lambda body: sign(body + b" "), "mismatch"),
        # stripe-python reads the exact key "t": the future timestamp the signature covers.
        (lambda body: f"x, t={int(time.time())},{future_signature(body)}", "future"),
        (lambda body: f"t={int(time.time())},v1=\u00e9{'0' * 63}", "mismatch"),
    ],
    ids=[
        "missing",
        "wrong-secret",
        "malformed",
        "stale",
        "future",
        "tampered-body",
        "future-behind-a-blank-t",
        "non-ascii-signature",
    ],
)
async def test_bad_signature_is_400_and_publishes_nothing(
    gateway: Gateway, kafka: Any, make_header: Any, reason: str
) -> None:
    event = load_event("customer.subscription.created__syncengine__1")
    body = json.dumps(event).encode()
    header = make_header(body)
    # Header bytes as sent (latin-1: the gateway reads them so).
    headers = {b"Stripe-Signature": header.encode("latin-1")} if header else {}

    response = await post(gateway, body, headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason
    assert await published(kafka, event["id"]) == []


def future_signature(body: bytes) -> str:
    """``t=<an hour ahead>,v1=<its signature>``."""
    return sign(body, timestamp=int(time.time()) + 3600)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2, 3]", b'{"object": "customer", "id": "cus_1"}', b"\xff\xfe"],
    ids=["broken-json", "array", "not-an-event", "not-utf8"],
)
async def test_signed_garbage_is_400(gateway: Gateway, body: bytes) -> None:
    response = await post(gateway, body, {"Stripe-Signature": sign_bytes(body)})
    assert response.status_code == 400
    assert response.json()["status"] == 400


def sign_bytes(body: bytes) -> str:
    try:
        return sign(body)
    except UnicodeDecodeError:
        return "t=1,v1=00"


async def test_oversized_body_is_413(gateway: Gateway) -> None:
    body = b"{" + b" " * (gateway.settings.webhook_max_body_bytes + 1) + b"}"
    response = await post(gateway, body, {"Stripe-Signature": sign(body)})
    assert response.status_code == 413


async def test_unhandled_type_is_200_ignored_counted_and_not_published(
    gateway: Gateway, kafka: Any
) -> None:
    event = load_event("product.created__syncengine__1")
    body, headers = signed(event)

    response = await post(gateway, body, headers)

    assert response.status_code == 200
    assert response.json() == {"received": True, "ignored": True}
    assert await published(kafka, event["id"]) == []
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        metrics = (await client.get("/metrics")).text
    assert 'billing_webhooks_received_total{outcome="ignored",type="product.created"}' in metrics


async def test_unmappable_handled_event_is_422_and_not_published(
    gateway: Gateway, kafka: Any
) -> None:
    event = load_event("customer.subscription.created__syncengine__1")
    event["data"]["object"] = {"object": "subscription"}  # no id, no customer, no status
    body, headers = signed(event)

    response = await post(gateway, body, headers)

    assert response.status_code == 422
    assert await published(kafka, event["id"]) == []


async def test_other_api_version_is_published_and_reported(gateway: Gateway) -> None:
    event = load_event("customer.subscription.trial_will_end__rubymock__2")  # 2014-11-05
    body, headers = signed(event)

    assert (await post(gateway, body, headers)).status_code == 200
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        metrics = (await client.get("/metrics")).text
    assert 'billing_webhook_api_version_mismatches_total{api_version="2014-11-05"}' in metrics


async def test_health_readiness_openapi_and_metrics(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        openapi = (await client.get("/openapi.json")).json()
        asyncapi = (await client.get("/asyncapi.json")).json()
        metrics = (await client.get("/metrics")).text
        missing = await client.get("/nope")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"kafka": "ok", "database": "ok"}
    assert "/webhooks/stripe" in openapi["paths"]
    assert list(asyncapi["channels"]) == [BILLING_EVENTS]
    assert "SubscriptionEvent" in str(asyncapi["components"]["schemas"])
    for name in (
        "billing_webhooks_received_total",
        "billing_webhook_signature_failures_total",
        "billing_webhook_publish_seconds_bucket",
        "billing_webhooks_in_flight",
    ):
        assert name in metrics
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_frozen_broker_is_503_then_redelivery_is_200_and_applied_once(
    settings: FleetSettings,
) -> None:
    """What does hold: 2xx only after the broker's ack, a 503 when none comes within the
    publish timeout, and a 503'd event may still land once the broker resumes (its
    request was on the wire). Stripe's redelivery carries the same event, so the topic
    holds it once or more with the same id, and the consumer applies it once."""
    assert settings.database_url
    event = load_event("invoice.payment_failed__rubymock__1")
    body, headers = signed(event)  # Stripe redelivers these very bytes
    warm_event = load_event("invoice.paid__syncengine__1")
    timeout = 2.0
    # A broker of its own, so freezing it stalls no other test.
    with EmbeddedKafka() as kafka:
        assert kafka.pid is not None
        gateway_settings = settings.model_copy(
            update={
                "kafka_bootstrap_servers": kafka.bootstrap_servers,
                "kafka_publish_timeout_seconds": timeout,
                "gateway_port": free_port(),
            }
        )
        await create_topics(gateway_settings)
        async with serve_gateway(gateway_settings) as app:
            assert await app.state.publisher.wait_connected(10)
            url = f"http://127.0.0.1:{gateway_settings.gateway_port}"
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                # Connected, with the topic's metadata: the next produce goes on the wire.
                warm_body, warm_headers = signed(warm_event)
                warm = await client.post(
                    "/webhooks/stripe", content=warm_body, headers=warm_headers
                )
                assert warm.status_code == 200, warm.text

                os.kill(kafka.pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    down = await client.post("/webhooks/stripe", content=body, headers=headers)
                    answered_in = time.monotonic() - started
                    not_ready = await client.get("/readyz")
                finally:
                    os.kill(kafka.pid, signal.SIGCONT)

                assert down.status_code == 503, down.text
                assert down.headers["retry-after"]
                assert answered_in < timeout + 2  # the publish timeout, plus its margin
                assert not_ready.status_code == 503
                again = await _redeliver(client, body, headers)
                assert again.status_code == 200, again.text

        records = await published(kafka, event["id"])
        assert len(records) >= 1  # the redelivery; the 503'd attempt may have landed too
        assert {r.value for r in records} == {records[0].value}
        assert {dict(r.headers)["ce_id"] for r in records} == {
            str(event_id_for(event["id"])).encode()
        }

        # The consumer applies it once, however many copies the topic holds.
        database_url, name = settings.database_url, unique("toy")
        worker = worker_settings(settings, kafka_bootstrap_servers=kafka.bootstrap_servers)
        await prepare_tables(database_url)

        async def consumed_every_copy() -> bool:
            duplicates = metric("billing_duplicates_skipped_total", worker=name)
            return duplicates >= len(records) - 1 and len(await applied(database_url, name)) >= 2

        async with running(toy_spec(name, BILLING_EVENTS), worker):
            await wait_for(consumed_every_copy, message="every copy consumed")
    assert sorted(await applied(database_url, name)) == sorted([warm_event["id"], event["id"]])


async def _redeliver(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """Stripe's retries, compressed: the same delivery until it is acknowledged (bounded)."""
    for _ in range(10):
        response = await client.post("/webhooks/stripe", content=body, headers=headers)
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.5)
    return response
