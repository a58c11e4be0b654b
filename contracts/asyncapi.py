"""The AsyncAPI 3.0 document of the topics billing-fleet publishes, committed as
``contracts/asyncapi.json`` and shipped in the contracts wheel.

Each topic is a channel with one message: its Kafka key, its CloudEvents headers (the ones
``contracts.headers`` builds) and its payload, a reference to the topic's committed JSON
Schema (``schemas/<topic>.json``, shipped next to the document) rather than a copy of it.
Regenerated with the schemas by ``python -m contracts.schema_export``; a test checks the
committed file is current.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

from contracts.documents import ASYNCAPI_FILE, SCHEMA_TOPICS
from contracts.entitlements import EntitlementChangeType
from contracts.events import BILLING_EVENT_TYPES
from contracts.headers import CONTENT_TYPE, HEADERS, REQUIRED_HEADERS, SPEC_VERSION
from contracts.ledger import LEDGER_EVENT_TYPES
from contracts.topics import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES
from contracts.version import __version__

ASYNCAPI_PATH: Final = Path(__file__).parent / ASYNCAPI_FILE
SCHEMA_FORMAT: Final = "application/schema+json;version=draft-2020-12"
KAFKA_BINDING_VERSION: Final = "0.5.0"


@dataclass(frozen=True)
class Channel:
    """One published topic, as the document describes it."""

    id: str  # the AsyncAPI channel and message id
    topic: str
    title: str
    description: str
    key: str  # what the record key holds
    source: str  # ce_source of every record (the producer)
    types: tuple[str, ...]  # ce_type values today (new ones are added within the version)
    subject_always: bool  # ce_subject is set on every record


CHANNELS: Final = (
    Channel(
        id="BillingEvent",
        topic=BILLING_EVENTS,
        title="Billing events",
        description="One normalized event per Stripe event (`contracts.BillingEvent`), "
        "published by the webhook gateway after verifying its signature.",
        key="The Stripe customer id; when an event has no customer, a refund's or "
        "dispute's charge id, an invoice payment's invoice id, else the object id.",
        source="/billing-fleet/stripe",
        types=tuple(sorted(BILLING_EVENT_TYPES)),
        subject_always=False,
    ),
    Channel(
        id="EntitlementChange",
        topic=ENTITLEMENT_CHANGES,
        title="Entitlement changes",
        description="One event per (customer, feature) whose effective entitlement changed "
        "(`contracts.EntitlementChange`), relayed from the entitlement worker's outbox.",
        key="The Stripe customer id.",
        source="/billing-fleet/entitlement",
        types=get_args(EntitlementChangeType),
        subject_always=True,
    ),
    Channel(
        id="LedgerEvent",
        topic=INVOICES,
        title="Invoice and payment ledger",
        description="One event per created or changed ledger row (invoice, payment, refund, "
        "dispute) and one `receipt.issued` per succeeded payment (`contracts.LedgerEvent`), "
        "relayed from the invoice worker's outbox.",
        key="The Stripe customer id; when there is none, a refund's or dispute's charge id, "
        "else the object's id (a receipt's payment id).",
        source="/billing-fleet/invoice",
        types=tuple(sorted(LEDGER_EVENT_TYPES)),
        subject_always=False,
    ),
)


def headers_schema(channel: Channel) -> dict[str, Any]:
    """The record headers of ``channel`` (CloudEvents 1.0 Kafka binding, binary mode)."""
    values: dict[str, dict[str, Any]] = {
        "ce_specversion": {"const": SPEC_VERSION},
        "ce_id": {"format": "uuid"},
        "ce_type": {"enum": list(channel.types)},
        "ce_source": {"const": channel.source},
        "ce_time": {"format": "date-time"},
        "content-type": {"const": CONTENT_TYPE},
    }
    required = [*REQUIRED_HEADERS, "content-type"]
    if channel.subject_always:
        required.append("ce_subject")
    return {
        "type": "object",
        "required": required,
        "properties": {
            name: {"type": "string", "description": description, **values.get(name, {})}
            for name, description in HEADERS.items()
        },
    }


def _message(channel: Channel) -> dict[str, Any]:
    return {
        "name": channel.id,
        "title": channel.title,
        "summary": f"A record of {channel.topic}.",
        "contentType": CONTENT_TYPE,
        "headers": headers_schema(channel),
        "payload": {
            "schemaFormat": SCHEMA_FORMAT,
            "schema": {"$ref": f"schemas/{channel.topic}.json"},
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": channel.key},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``CHANNELS``, as billing-fleet (the sender) sees them."""
    if sorted(c.topic for c in CHANNELS) != sorted(SCHEMA_TOPICS):
        raise RuntimeError("contracts.asyncapi.CHANNELS must list every topic with a schema")
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "billing-fleet contracts",
            "version": __version__,
            "description": "The Kafka topics billing-fleet publishes. Record values are JSON "
            "(the payload schemas ship next to this document in the billing-fleet-contracts "
            "wheel); headers follow the CloudEvents 1.0 Kafka binding. Consumers must ignore "
            "event types they do not know: new ones are added within a topic version.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": {
            c.id: {
                "address": c.topic,
                "title": c.title,
                "description": c.description,
                "messages": {c.id: {"$ref": f"#/components/messages/{c.id}"}},
                "bindings": {"kafka": {"topic": c.topic, "bindingVersion": KAFKA_BINDING_VERSION}},
            }
            for c in CHANNELS
        },
        "operations": {
            f"publish{c.id}": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{c.id}"},
                "messages": [{"$ref": f"#/channels/{c.id}/messages/{c.id}"}],
            }
            for c in CHANNELS
        },
        "components": {"messages": {c.id: _message(c) for c in CHANNELS}},
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main() -> int:
    ASYNCAPI_PATH.write_text(render(document()))
    print(f"wrote {ASYNCAPI_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
