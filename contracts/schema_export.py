"""JSON Schemas of every published event, committed under ``contracts/schemas/``.

Regenerate after changing a model: ``python -m contracts.schema_export`` (it writes the
AsyncAPI document, ``contracts.asyncapi``, too). It refuses to overwrite a committed schema
with a backward-incompatible one (``contracts.compat``): such a change needs a new topic
version. A compatible change is a new schema revision (``contracts.version``). A test
checks the committed files are current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from contracts.compat import breaking_changes
from contracts.entitlements import entitlement_change_adapter
from contracts.events import billing_event_adapter
from contracts.ledger import ledger_event_adapter
from contracts.topics import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES

SCHEMA_DIR = Path(__file__).parent / "schemas"

PUBLISHED: dict[str, TypeAdapter[Any]] = {
    BILLING_EVENTS: billing_event_adapter,
    ENTITLEMENT_CHANGES: entitlement_change_adapter,
    INVOICES: ledger_event_adapter,
}
"""Topic → the adapter of the values published on it."""


def schema_for(topic: str) -> dict[str, Any]:
    # Validation mode: fields with defaults stay optional, as old events on the topic lack them.
    schema = PUBLISHED[topic].json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": topic, **schema}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_path(topic: str) -> Path:
    return SCHEMA_DIR / f"{topic}.json"


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    status = 0
    for topic in PUBLISHED:
        path, schema = schema_path(topic), schema_for(topic)
        if path.exists() and (problems := breaking_changes(json.loads(path.read_text()), schema)):
            print(f"refusing to overwrite {path}: breaking changes:", *problems, sep="\n  ")
            status = 1
            continue
        path.write_text(render(schema))
        print(f"wrote {path}")
    from contracts import asyncapi  # it reads SCHEMA_TOPICS, which PUBLISHED must match

    return max(status, asyncapi.main())


if __name__ == "__main__":
    raise SystemExit(main())
