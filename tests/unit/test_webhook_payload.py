"""What a signed webhook carries: the CloudEvent (structured mode) from the one header
builder, one delivery per endpoint, and signatures two implementations agree on."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from api_gateway.normalize import normalize
from contracts import BillingEvent, cloudevent_headers
from tests.stripe_fixtures import load_event
from tests.webhook_support import endpoint, new_secret, spec_signatures, verifies
from workers.notification.settings import NotificationSettings
from workers.notification.webhooks import CHANNEL
from workers.notification.webhooks.endpoints import EndpointsFile, parse_endpoints
from workers.notification.webhooks.health import HealthBuffer
from workers.notification.webhooks.payload import (
    CONTENT_TYPE,
    cloudevent_payload,
    webhook_deliveries,
)
from workers.notification.webhooks.sender import webhook_policy, webhook_sender
from workers.notification.webhooks.signing import signed_headers
from workers.runtime.deliveries.model import SendResult
from workers.runtime.settings import RuntimeSettings

SOURCE = "/billing-fleet/stripe"


def invoice_paid() -> BillingEvent:
    event: BillingEvent = normalize(load_event("invoice.paid__rubymock__1"))
    return event


def test_the_payload_is_the_structured_cloudevent_of_the_kafka_headers() -> None:
    event = invoice_paid()
    payload = cloudevent_payload(event, source=SOURCE)
    headers = cloudevent_headers(event, source=SOURCE)
    assert list(payload) == [
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "subject",
        "datacontenttype",
        "data",
    ]
    assert payload["specversion"] == headers["ce_specversion"] == "1.0"
    assert payload["id"] == headers["ce_id"] == str(event.id)
    assert payload["type"] == headers["ce_type"] == "invoice.paid"
    assert payload["source"] == SOURCE
    assert payload["time"] == headers["ce_time"] and payload["time"].endswith("Z")
    assert payload["subject"] == event.customer_id
    assert payload["datacontenttype"] == "application/json"
    assert payload["data"] == json.loads(event.model_dump_json())


def test_no_subject_without_a_customer() -> None:
    event = invoice_paid().model_copy(update={"customer_id": None})
    assert "subject" not in cloudevent_payload(event, source=SOURCE)


def test_one_delivery_per_endpoint_keyed_by_endpoint_and_event() -> None:
    event = invoice_paid()
    endpoints = parse_endpoints(
        {
            "endpoints": [
                endpoint("acc", "https://acc.example/h", [new_secret()], ["invoice.*"]),
                endpoint("crm", "https://crm.example/h", [new_secret()], ["customer.*"]),
                endpoint("all", "https://all.example/h", [new_secret()]),
            ]
        },
        origin="test",
    )
    deliveries = webhook_deliveries(endpoints.endpoints_for(event.type), event, source=SOURCE)
    assert [(d.destination, d.idempotency_key, dict(d.metadata)) for d in deliveries] == [
        (
            "https://acc.example/h",
            f"webhook:acc:{event.id}",
            {"endpoint": "acc", "event_type": event.type},
        ),
        (
            "https://all.example/h",
            f"webhook:all:{event.id}",
            {"endpoint": "all", "event_type": event.type},
        ),
    ]
    assert {d.channel for d in deliveries} == {CHANNEL}
    assert deliveries[0].payload is deliveries[1].payload  # built once
    assert json.loads(deliveries[0].payload) == cloudevent_payload(event, source=SOURCE)
    assert dict(deliveries[0].headers) == {"content-type": CONTENT_TYPE}
    # No secret in the row: they are read from the endpoints file at send time.
    assert all("secret" not in json.dumps(dict(d.metadata)) for d in deliveries)
    assert webhook_deliveries([], event, source=SOURCE) == []


def test_signatures_verify_by_hand_and_with_standardwebhooks_for_each_secret() -> None:
    old, new = new_secret(), new_secret()
    body = '{"type":"invoice.paid","data":{"amount":1999,"currency":"eur","name":"Zoë"}}'
    at = datetime.now(UTC)
    headers = signed_headers([old, new], "acc:evt-1", at, body)
    assert headers["webhook-id"] == "acc:evt-1"
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    first, second = headers["webhook-signature"].split(" ")
    raw = body.encode()
    assert first == spec_signatures(old, "acc:evt-1", headers["webhook-timestamp"], raw)
    assert second == spec_signatures(new, "acc:evt-1", headers["webhook-timestamp"], raw)
    for secret in (old, new):
        assert verifies(secret, headers, raw)
        assert Webhook(secret).verify(raw, headers) == json.loads(body)
    assert not verifies(new_secret(), headers, raw)
    assert not verifies(old, headers, raw.replace(b"1999", b"9999"))


def test_health_keeps_the_newest_outcome_each_way() -> None:
    health = HealthBuffer()
    t1, t2, t3 = (datetime(2025, 1, 1, h, tzinfo=UTC) for h in (1, 2, 3))
    health.note("a", SendResult("retry", "503", "HTTP 503"), t2)
    health.note("a", SendResult("sent", "200"), t3)
    health.note("a", SendResult("failed", "400", "HTTP 400"), t1)  # older: not the last
    health.note("b", SendResult("retry", None, "ConnectError"), t1)
    taken = {h.endpoint_id: h for h in health.take()}
    assert not health
    assert (taken["a"].last_success_at, taken["a"].last_failure_at) == (t3, t2)
    assert taken["a"].last_failure == "503 HTTP 503"
    assert (taken["b"].last_success_at, taken["b"].last_failure) == (None, "ConnectError")
    health.note("a", SendResult("sent", "200"), t1)
    health.keep(list(taken.values()))  # a write that failed is merged back, newest wins
    again = {h.endpoint_id: h for h in health.take()}
    assert again["a"].last_success_at == t3 and again["b"].last_failure_at == t1


def test_the_default_retry_schedule_is_the_spec_s() -> None:
    backoff = NotificationSettings().notification_webhook_backoff_seconds
    policy = webhook_policy(backoff)
    # At once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts, then dead.
    assert policy.backoff_seconds == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert policy.max_attempts == 8


class _Settings(RuntimeSettings, NotificationSettings):
    """The notification worker's settings where it runs (the runtime's and its own)."""


async def test_the_factory_needs_a_lease_longer_than_a_send() -> None:
    endpoints = EndpointsFile(None)
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    short = _Settings(database_url=url, delivery_lease_seconds=15.0)  # 10 s HTTP + 2 x 5 s
    with pytest.raises(ValueError, match=r"BILLING_DELIVERY_LEASE_SECONDS .* \(20 s\)"):
        webhook_sender(short, endpoints, worker="notification")
    sender = webhook_sender(_Settings(database_url=url), endpoints, worker="notification")
    assert (sender.timeout_seconds, sender.policy.max_attempts) == (20.0, 8)
    await sender.aclose()
