"""The committed JSON Schemas are current, and the compatibility check catches breakage."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter, ValidationError

import contracts
from api_gateway.normalize import HANDLED_TYPES, normalize
from contracts import (
    BILLING_EVENTS,
    ENTITLEMENT_CHANGES,
    INVOICES,
    asyncapi,
    dead_letter_topic,
    parse_billing_event,
)
from contracts.compat import breaking_changes
from contracts.documents import SCHEMA_TOPICS, schemas_digest
from contracts.events import NO_NUL, PURCHASE_QUANTITY, TIMESTAMP_YEARS, Text, storable_text
from contracts.payloads import TOPIC_MODELS
from contracts.schema_export import PUBLISHED, render, schema_for, schema_path
from contracts.version import SCHEMAS_SHA256
from tests.stripe_fixtures import fixture_files, load_event


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


# -- narrowing is compatible, loosening is not ----------------------------------------------


def test_narrowed_constraints_are_compatible(schema: dict[str, Any]) -> None:
    """A schema without the readers' constraints, then with them: every event the new one
    accepts, the old one accepted."""
    loose = copy.deepcopy(schema)
    props(loose, "SubscriptionItem")["quantity"] = {"type": "integer"}
    props(loose, "SubscriptionEvent")["customer_id"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}]
    }
    props(loose, "Subscription")["items"] = {
        "items": {"$ref": "#/$defs/SubscriptionItem"},
        "type": "array",
    }
    props(loose, "Subscription")["metadata"] = {
        "additionalProperties": {"type": "string"},
        "type": "object",
    }
    props(loose, "Customer")["email"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    del loose["$defs"]["PaymentEvent"]["allOf"]
    assert breaking_changes(loose, schema) == []


@pytest.mark.parametrize(
    ("definition", "prop", "loosen", "problem"),
    [
        ("SubscriptionItem", "quantity", lambda p: p.pop("maximum"), "type changed"),
        ("SubscriptionItem", "quantity", lambda p: p.update(minimum=-1), "type changed"),
        ("Subscription", "items", lambda p: p.pop("minItems"), "type changed"),
        ("Subscription", "status", lambda p: p.pop("pattern"), "type changed"),
        ("Subscription", "status", lambda p: p.update(pattern="^[a-z]*$"), "type changed"),
        ("SubscriptionItem", "id", lambda p: p["anyOf"][0].update(maxLength=256), "type changed"),
        ("SubscriptionEvent", "customer_id", lambda p: p.update(type=["string", "null"]),
         "type changed"),
        ("Customer", "metadata", lambda p: p.pop("propertyNames"), "type changed"),
    ],
)  # fmt: skip
def test_loosened_constraints_are_breaking(
    schema: dict[str, Any], definition: str, prop: str, loosen: Any, problem: str
) -> None:
    new = copy.deepcopy(schema)
    loosen(props(new, definition)[prop])
    assert breaking_changes(schema, new) == [f"{definition}.{prop}: {problem}"]


def test_removed_definition_constraint_is_breaking(schema: dict[str, Any]) -> None:
    new = copy.deepcopy(schema)
    del new["$defs"]["CheckoutEvent"]["allOf"]
    assert breaking_changes(schema, new) == ["CheckoutEvent: constraints changed"]


def test_a_root_object_schema_is_compared_too() -> None:
    old = schema_for(ENTITLEMENT_CHANGES)
    new = copy.deepcopy(old)
    del new["properties"]["limit"]["anyOf"][0]["minimum"]
    new["properties"]["feature"] = {"type": "integer"}
    assert breaking_changes(old, new) == [
        "EntitlementChange.feature: type changed",
        "EntitlementChange.limit: type changed",
    ]


# -- what the committed schemas state --------------------------------------------------------


def committed(topic: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(schema_path(topic).read_text())
    return data


def strings(node: Any) -> list[dict[str, Any]]:
    """Every string schema in ``node`` that carries free text (not an enum, uuid or time)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"enum", "const", "format"} & node.keys():
            found.append(node)
        for key, value in node.items():
            if key not in {"allOf"}:  # the conditional's fragments restate fields
                found += strings(value)
    elif isinstance(node, list):
        for value in node:
            found += strings(value)
    return found


@pytest.mark.parametrize("topic", sorted(PUBLISHED))
def test_committed_schemas_refuse_nul_in_every_text(topic: str) -> None:
    texts = strings(committed(topic))
    assert len(texts) >= 5
    assert all(node.get("pattern") == NO_NUL for node in texts), [
        node for node in texts if node.get("pattern") != NO_NUL
    ]


@pytest.mark.parametrize(
    "text", ["", "cus_1", "café 🎉", "a\x00b", "\x00", "x\ud800", "\udfff"], ids=repr
)
def test_storable_text_is_the_rule_the_models_apply(text: str) -> None:
    """The gateway checks paths and token subjects with ``storable_text``; the models check
    their text with ``NO_NUL``: both refuse the same text (NUL, lone surrogates)."""
    try:
        TypeAdapter(Text).validate_python(text)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert storable_text(text) is accepted


def test_committed_schema_states_what_the_worker_relies_on() -> None:
    defs = committed(BILLING_EVENTS)["$defs"]
    item = defs["SubscriptionItem"]["properties"]
    assert (item["quantity"]["minimum"], item["quantity"]["maximum"]) == (0, 2**31 - 1)
    assert item["price_id"]["minLength"] == 1 and "price_id" in defs["SubscriptionItem"]["required"]
    assert defs["Subscription"]["properties"]["items"]["minItems"] == 1
    for event in ("SubscriptionEvent", "EntitlementSummaryEvent"):
        customer = defs[event]["properties"]["customer_id"]
        assert (customer["type"], customer["minLength"], customer["maxLength"]) == (
            "string", 1, 255,
        )  # fmt: skip
    assert defs["Customer"]["properties"]["id"]["minLength"] == 1
    metadata = defs["Payment"]["properties"]["metadata"]
    assert metadata["propertyNames"] == {"pattern": NO_NUL}
    assert metadata["additionalProperties"]["maxLength"] == 500
    amount = defs["Invoice"]["properties"]["total"]
    assert (amount["minimum"], amount["maximum"]) == (-(2**63), 2**63 - 1)
    occurred = defs["SubscriptionEvent"]["properties"]["occurred_at"]
    assert occurred["pattern"] == TIMESTAMP_YEARS
    for event, payload in (("PaymentEvent", "payment"), ("CheckoutEvent", "checkout")):
        [conditional] = defs[event]["allOf"]
        assert conditional["then"]["properties"]["customer_id"]["minLength"] == 1
        quantity = conditional["then"]["properties"][payload]["properties"]["metadata"]
        assert quantity["properties"]["quantity"]["pattern"] == PURCHASE_QUANTITY
    limit = committed(ENTITLEMENT_CHANGES)["properties"]["limit"]["anyOf"][0]
    assert (limit["minimum"], limit["maximum"]) == (0, 2**63 - 1)


def test_the_committed_schema_accepts_every_normalized_fixture() -> None:
    """The JSON Schema a non-Python reader validates with agrees with the models on real
    events (a test in test_normalize parses each through the models)."""
    validator = Draft202012Validator(committed(BILLING_EVENTS))
    events = [
        normalize(json.loads(path.read_text()))
        for path in fixture_files()
        if json.loads(path.read_text())["type"] in HANDLED_TYPES
    ]
    assert len(events) > 40
    for event in events:
        errors = [e.message for e in validator.iter_errors(json.loads(event.model_dump_json()))]
        assert errors == [], event.source.stripe_event_id


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e.update(customer_id=None), "customer_id"),
        (lambda e: e["subscription"]["items"][0].update(quantity=-50), "quantity"),
        (lambda e: e["subscription"]["items"][0].update(quantity=2**63), "quantity"),
        (lambda e: e["subscription"].update(items=[]), "items"),
        (lambda e: e["subscription"]["items"][0].update(price_id=None), "price_id"),
        (lambda e: e.update(customer_id="cus_\x00"), "customer_id"),
        (lambda e: e["subscription"]["metadata"].update({"k\x00": "v"}), "metadata"),
        (lambda e: e.update(occurred_at="0001-01-01T00:00:00+05:30"), "occurred_at"),
    ],
    ids=["no-customer", "negative-quantity", "bigint-quantity", "no-items", "no-price",
         "nul-customer", "nul-metadata-key", "year-one"],
)  # fmt: skip
def test_schema_and_models_refuse_what_no_worker_can_apply(change: Any, expected: str) -> None:
    stripe = load_event("customer.subscription.created__syncengine__1")
    event = json.loads(normalize(stripe).model_dump_json())
    change(event)
    validator = Draft202012Validator(committed(BILLING_EVENTS))
    assert list(validator.iter_errors(event)), "the JSON Schema accepts it"
    with pytest.raises(ValidationError, match=expected):
        parse_billing_event(json.dumps(event))


@pytest.mark.parametrize(
    ("metadata", "customer", "refused"),
    [
        ({"lookup_key": "lifetime_deal"}, None, "needs a customer_id"),
        ({"lookup_key": "lifetime_deal", "quantity": "0"}, "cus_1", "metadata.quantity"),
        ({"lookup_key": "lifetime_deal", "quantity": "3"}, "cus_1", None),
        ({"lookup_key": ""}, None, None),  # names nothing: not a purchase
        ({"note": "x"}, None, None),
    ],
)
def test_a_one_off_purchase_needs_a_customer_and_a_valid_quantity(
    metadata: dict[str, str], customer: str | None, refused: str | None
) -> None:
    """A guest payment is fine; a guest purchase (metadata names one) cannot be entitled."""
    stripe = load_event("payment_intent.succeeded__rubymock__1")
    event = json.loads(normalize(stripe).model_dump_json())
    assert event["customer_id"] is None and event["payment"]["invoice_id"] is None
    event["customer_id"], event["payment"]["metadata"] = customer, metadata
    schema_errors = list(Draft202012Validator(committed(BILLING_EVENTS)).iter_errors(event))
    if refused is None:
        assert schema_errors == []
        parse_billing_event(json.dumps(event))
        return
    assert schema_errors
    with pytest.raises(ValidationError, match=refused):
        parse_billing_event(json.dumps(event))
    # Not for an invoice's payment, nor for a failed one: the worker ignores those.
    for other in ({"invoice_id": "in_1"}, {}):
        loose = copy.deepcopy(event)
        loose["payment"].update(other)
        loose["type"] = "payment.failed" if not other else loose["type"]
        assert list(Draft202012Validator(committed(BILLING_EVENTS)).iter_errors(loose)) == []
        parse_billing_event(json.dumps(loose))


# -- the shipped documents, the version, the public vocabulary --------------------------------


def test_committed_asyncapi_document_is_current() -> None:
    assert asyncapi.ASYNCAPI_PATH.read_text() == asyncapi.render(asyncapi.document()), (
        "AsyncAPI document changed: run `python -m contracts.schema_export` and commit"
    )
    assert contracts.asyncapi_document() == asyncapi.document()


def test_asyncapi_payloads_are_the_shipped_schemas() -> None:
    doc = contracts.asyncapi_document()
    assert doc["info"]["version"] == contracts.__version__
    messages = doc["components"]["messages"]
    addresses = []
    for channel in doc["channels"].values():
        addresses.append(channel["address"])
        [message] = [messages[m["$ref"].rsplit("/", 1)[1]] for m in channel["messages"].values()]
        ref = message["payload"]["schema"]["$ref"]
        topic = channel["address"]
        shipped = json.loads(asyncapi.ASYNCAPI_PATH.parent.joinpath(ref).read_text())
        assert shipped == contracts.json_schema(topic) == schema_for(topic)
    assert sorted(addresses) == sorted(PUBLISHED) == sorted(SCHEMA_TOPICS)
    for operation in doc["operations"].values():
        assert operation["action"] == "send"
        assert operation["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]


def test_an_unknown_topic_has_no_schema() -> None:
    with pytest.raises(ValueError, match=r"no JSON Schema for topic 'notices\.v1'; known: "):
        contracts.json_schema("notices.v1")
    assert contracts.json_schema(INVOICES)["title"] == INVOICES


def test_the_version_names_the_topics_and_the_committed_schemas() -> None:
    major, revision, patch = (int(part) for part in contracts.__version__.split("."))
    assert {topic.rsplit(".", 1)[1] for topic in PUBLISHED} == {f"v{major}"}
    assert (revision, patch) >= (0, 0)
    assert schemas_digest() == SCHEMAS_SHA256, (
        "the committed schemas changed: raise the revision in contracts.version.__version__ "
        f"and set SCHEMAS_SHA256 = {schemas_digest()!r}"
    )


INTERNALS = {"change_id_text", "entitlement_change_json", "storable_text", "breaking_changes"}


def test_the_public_vocabulary() -> None:
    public = set(contracts.__all__)
    assert len(public) == len(contracts.__all__)
    assert all(hasattr(contracts, name) for name in public)
    assert {
        "BillingEvent",
        "EntitlementChange",
        "BILLING_EVENTS",
        "ENTITLEMENT_CHANGES",
        "parse_billing_event",
        "parse_entitlement_change",
        "cloudevent_kafka_headers",
        "cloudevent_headers",
        "json_schema",
        "asyncapi_document",
    } <= public
    assert not public & INTERNALS
    assert not any(hasattr(contracts, name) for name in INTERNALS), "internals stay in submodules"


def test_the_app_imports_from_contracts_only_its_vocabulary() -> None:
    """What the gateway and the workers take from ``contracts`` itself is public; anything
    else they name by its submodule."""
    root = Path(__file__).resolve().parents[2]
    named: set[str] = set()
    for path in [*root.glob("api_gateway/**/*.py"), *root.glob("workers/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "contracts":
                named |= {alias.name for alias in node.names}
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "contracts"
            ):
                named.add(node.attr)
    assert "BillingEvent" in named
    assert named <= set(contracts.__all__)


def test_each_published_topic_has_one_contract_type() -> None:
    """``TOPIC_MODELS`` (the workers' AsyncAPI payloads) names the types whose schemas ship."""
    assert sorted(TOPIC_MODELS) == sorted(PUBLISHED) == sorted(SCHEMA_TOPICS)
    for topic, model in TOPIC_MODELS.items():
        assert TypeAdapter(model).json_schema() == PUBLISHED[topic].json_schema(), topic
