"""The committed JSON Schemas are current, and the compatibility check catches breakage."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from api_gateway.normalize import normalize
from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, dead_letter_topic, parse_billing_event
from contracts.compat import breaking_changes
from contracts.schema_export import PUBLISHED, render, schema_for, schema_path
from tests.stripe_fixtures import load_event


@pytest.mark.parametrize("topic", sorted(PUBLISHED))
def test_committed_schema_is_current_and_compatible(topic: str) -> None:
    committed = json.loads(schema_path(topic).read_text())
    generated = schema_for(topic)
    assert breaking_changes(committed, generated) == [], "backward-incompatible change"
    assert render(generated) == render(committed), (
        "schema changed compatibly: run `python -m contracts.schema_export` and commit"
    )


@pytest.fixture
def schema() -> dict[str, Any]:
    return copy.deepcopy(schema_for(BILLING_EVENTS))


def props(schema: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = schema["$defs"][name]["properties"]
    return properties


def test_removed_field_is_breaking(schema: dict[str, Any]) -> None:
    new = copy.deepcopy(schema)
    del props(new, "Subscription")["status"]
    new["$defs"]["Subscription"]["required"].remove("status")
    problems = breaking_changes(schema, new)
    assert "Subscription.status: removed" in problems
    assert "Subscription: no longer required: ['status']" in problems


def test_changed_type_is_breaking(schema: dict[str, Any]) -> None:
    new = copy.deepcopy(schema)
    props(new, "Invoice")["total"] = {"type": "string"}
    assert breaking_changes(schema, new) == ["Invoice.total: type changed"]


def test_new_required_field_is_breaking(schema: dict[str, Any]) -> None:
    new = copy.deepcopy(schema)
    props(new, "Customer")["tier"] = {"type": "string"}
    new["$defs"]["Customer"]["required"].append("tier")
    assert breaking_changes(schema, new) == ["Customer: newly required: ['tier']"]


def test_removed_event_type_is_breaking(schema: dict[str, Any]) -> None:
    new = copy.deepcopy(schema)
    del new["discriminator"]["mapping"]["invoice.voided"]
    props(new, "InvoiceEvent")["type"]["enum"].remove("invoice.voided")
    problems = breaking_changes(schema, new)
    assert "event type 'invoice.voided': removed or moved" in problems
    assert "InvoiceEvent.type: values removed: ['invoice.voided']" in problems


def test_additions_are_compatible(schema: dict[str, Any]) -> None:
    new = copy.deepcopy(schema)
    props(new, "Customer")["tier"] = {"type": "string", "default": "free"}
    props(new, "InvoiceEvent")["type"]["enum"].append("invoice.overdue")
    new["discriminator"]["mapping"]["invoice.overdue"] = "#/$defs/InvoiceEvent"
    props(new, "Invoice")["total"]["description"] = "reworded prose is not a change"
    assert breaking_changes(schema, new) == []


def test_dead_letter_topic_name() -> None:
    assert dead_letter_topic(ENTITLEMENT_CHANGES, "notification") == (
        "entitlements.changes.v1.notification.dlt"
    )


def test_a_timestamp_without_offset_is_rejected() -> None:
    stripe = load_event("customer.subscription.created__syncengine__1")
    event = normalize(stripe).model_dump_json()
    aware = f'"occurred_at":"{normalize(stripe).occurred_at:%Y-%m-%dT%H:%M:%S}Z"'
    assert aware in event
    with pytest.raises(ValidationError, match="occurred_at"):
        parse_billing_event(event.replace(aware, aware.replace('Z"', '"')))
    assert parse_billing_event(event).occurred_at.utcoffset() is not None
