"""The documents shipped inside ``contracts``: the JSON Schema of each topic's values
(``schemas/<topic>.json``) and the AsyncAPI document of the topics (``asyncapi.json``),
read from the installed package, so they are the files this version was built with."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final

from contracts.topics import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES

SCHEMA_TOPICS: Final = (BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES)
"""The topics with a committed JSON Schema (``contracts.schema_export.PUBLISHED``)."""

ASYNCAPI_FILE: Final = "asyncapi.json"


def _package() -> Traversable:
    return resources.files("contracts")


def schema_file(topic: str) -> Traversable:
    """The shipped JSON Schema file of ``topic``'s values."""
    if topic not in SCHEMA_TOPICS:
        raise ValueError(f"no JSON Schema for topic {topic!r}; known: {', '.join(SCHEMA_TOPICS)}")
    return _package().joinpath("schemas", f"{topic}.json")


def json_schema(topic: str) -> dict[str, Any]:
    """The committed JSON Schema (draft 2020-12) of the values published on ``topic``."""
    schema: dict[str, Any] = json.loads(schema_file(topic).read_text(encoding="utf-8"))
    return schema


def asyncapi_file() -> Traversable:
    """The shipped AsyncAPI 3.0 document; its payloads refer to ``schemas/<topic>.json``
    next to it."""
    return _package().joinpath(ASYNCAPI_FILE)


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the topics: channels, payloads, CloudEvents headers."""
    document: dict[str, Any] = json.loads(asyncapi_file().read_text(encoding="utf-8"))
    return document


def schemas_digest() -> str:
    """sha256 over the shipped JSON Schemas, by topic name (``contracts.version``)."""
    digest = hashlib.sha256()
    for topic in sorted(SCHEMA_TOPICS):
        digest.update(topic.encode() + b"\0" + schema_file(topic).read_bytes() + b"\0")
    return digest.hexdigest()
