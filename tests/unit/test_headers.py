"""One CloudEvents header builder: the gateway's and the entitlement worker's headers are
the ones they built before it, and every record's headers match the AsyncAPI document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from jsonschema import Draft7Validator

from api_gateway.normalize import HANDLED_TYPES, normalize
from api_gateway.webhooks import CE_SOURCE as GATEWAY_SOURCE
from contracts import (
    BILLING_EVENTS,
    ENTITLEMENT_CHANGES,
    BillingEvent,
    asyncapi_document,
    cloudevent_headers,
    cloudevent_kafka_headers,
    parse_entitlement_change,
)
from contracts.entitlements import EntitlementChangeType
from tests.stripe_fixtures import fixture_files
from workers.entitlement.handler import CE_SOURCE as ENTITLEMENT_SOURCE
from workers.entitlement.handler import change_event
from workers.entitlement.rules import Effective

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
AT = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


def normalized_fixtures() -> list[BillingEvent]:
    stripe_events = [json.loads(path.read_text()) for path in fixture_files()]
    return [normalize(e) for e in stripe_events if e["type"] in HANDLED_TYPES]


def gateway_headers_before(event: BillingEvent, traceparent: str | None) -> dict[str, str]:
    """What ``cloudevent_headers`` built before the one builder (kept here to compare)."""
    headers = {
        "ce_specversion": "1.0",
        "ce_id": str(event.id),
        "ce_type": event.type,
        "ce_source": GATEWAY_SOURCE,
        "ce_time": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "content-type": "application/json",
    }
    if event.customer_id:
        headers["ce_subject"] = event.customer_id
    if traceparent:
        headers["traceparent"] = traceparent
    return headers


@pytest.mark.parametrize("traceparent", [None, "", TRACEPARENT])
def test_the_gateways_headers_are_unchanged_in_order_and_bytes(traceparent: str | None) -> None:
    events = normalized_fixtures()
    assert len(events) > 40
    assert any(not e.customer_id for e in events), "a fixture without a customer"
    for event in events:
        built = cloudevent_headers(event, source=GATEWAY_SOURCE, traceparent=traceparent)
        assert list(built.items()) == list(gateway_headers_before(event, traceparent).items())


@pytest.mark.parametrize(
    ("value", "at"),
    [
        (Effective(limit=500, expires_at=AT + timedelta(days=30), sources=("sub_1",)), AT),
        (None, AT),  # revoked
        (Effective(limit=None, expires_at=None, sources=("stripe",)), AT.replace(microsecond=0)),
    ],
)
def test_the_entitlement_workers_headers_are_unchanged(
    value: Effective | None, at: datetime
) -> None:
    change_type: EntitlementChangeType = (
        "entitlement.revoked" if value is None else "entitlement.granted"
    )
    out = change_event("cus_1", "user_1", change_type, "sso", value, "evt_1", at, by="evt_1")
    change = parse_entitlement_change(out.value)
    before = {  # the literal the handler built before the one builder
        "ce_specversion": "1.0",
        "ce_id": str(change.id),
        "ce_type": change_type,
        "ce_source": ENTITLEMENT_SOURCE,
        "ce_time": at.isoformat().replace("+00:00", "Z"),
        "ce_subject": "cus_1",
        "content-type": "application/json",
    }
    # Same names and bytes; only their order in the record differs (content-type first).
    assert out.headers == before
    assert cloudevent_headers(change, source=ENTITLEMENT_SOURCE) == out.headers


def test_time_keeps_its_offset_and_utc_is_written_with_z() -> None:
    east = datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    built = cloudevent_kafka_headers(id="x", type="t", source="/s", time=east)
    assert built["ce_time"] == "2025-06-01T14:00:00+02:00"
    built = cloudevent_kafka_headers(id="x", type="t", source="/s", time=AT)
    assert built["ce_time"] == "2025-06-01T12:00:00.123456Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        cloudevent_kafka_headers(id="x", type="t", source="/s", time=datetime(2025, 6, 1))


def test_subject_and_traceparent_only_when_given() -> None:
    bare = cloudevent_kafka_headers(id="x", type="t", source="/s", time=AT, subject="")
    assert "ce_subject" not in bare and "traceparent" not in bare
    full = cloudevent_kafka_headers(
        id="x", type="t", source="/s", time=AT, subject="cus_1", traceparent=TRACEPARENT
    )
    assert (full["ce_subject"], full["traceparent"]) == ("cus_1", TRACEPARENT)


def header_validator(topic: str) -> Draft7Validator:
    """The headers schema the AsyncAPI document gives ``topic``'s messages."""
    doc = asyncapi_document()
    [channel] = [c for c in doc["channels"].values() if c["address"] == topic]
    [ref] = [m["$ref"] for m in channel["messages"].values()]
    message: dict[str, Any] = doc["components"]["messages"][ref.rsplit("/", 1)[1]]
    return Draft7Validator(message["headers"], format_checker=Draft7Validator.FORMAT_CHECKER)


def test_the_records_headers_match_the_asyncapi_document() -> None:
    gateway = header_validator(BILLING_EVENTS)
    for event in normalized_fixtures():
        headers = cloudevent_headers(event, source=GATEWAY_SOURCE, traceparent=TRACEPARENT)
        assert [e.message for e in gateway.iter_errors(headers)] == [], event.type
    worker = header_validator(ENTITLEMENT_CHANGES)
    value = Effective(limit=1, expires_at=None, sources=("sub_1",))
    for change_type in get_args(EntitlementChangeType):
        out = change_event("cus_1", None, change_type, "sso", value, "evt_1", AT, by=None)
        assert [e.message for e in worker.iter_errors(out.headers)] == [], change_type
    # And the document's sources are what the producers send.
    wrong = cloudevent_headers(normalized_fixtures()[0], source=ENTITLEMENT_SOURCE)
    assert [e.path[0] for e in gateway.iter_errors(wrong)] == ["ce_source"]
