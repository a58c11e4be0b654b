"""A worker's AsyncAPI document names every topic it consumes and publishes, and dev's
gateway documents the workers it hosts with the same channels."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from faststream.specification import AsyncAPI

from billing_fleet.settings import CoreSettings
from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, EntitlementChange, dead_letter_topic
from fleet.embedded import free_port
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import create_topics, toy_spec, unique, wait_for, worker_settings
from workers.entitlement.worker import NAME, build
from workers.runtime.asyncapi import documentation_broker
from workers.runtime.run import run_worker
from workers.runtime.spec import WorkerSpec

pytestmark = pytest.mark.integration


async def _document(base: str) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            response = await client.get("/asyncapi.json")
    except httpx.TransportError:
        return None
    document: dict[str, Any] = response.json()
    return document


async def _served(spec: WorkerSpec, settings: FleetSettings, *topics: str) -> dict[str, Any]:
    """The AsyncAPI document ``spec`` serves once running (its topics created first)."""
    await create_topics(settings, *topics)
    worker = asyncio.create_task(run_worker(spec, settings))
    found: list[dict[str, Any]] = []

    async def served() -> bool:
        document = await _document(f"http://127.0.0.1:{settings.worker_http_port}")
        found.extend([document] if document else [])
        return document is not None

    try:
        await wait_for(served, timeout=30, message="the worker never served /asyncapi.json")
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    return found[0]


async def test_the_entitlement_worker_documents_every_topic(settings: FleetSettings) -> None:
    topic = unique("asyncapi.in")
    spec = build(settings).consuming(topic)  # not the shared input topic
    configured = worker_settings(settings, worker_http_port=free_port())
    document = await _served(spec, configured, topic)

    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {topic, dead_letter_topic(topic, NAME), ENTITLEMENT_CHANGES}
    changes = document["components"]["messages"][f"{ENTITLEMENT_CHANGES}:Message"]
    assert "EntitlementChange" in json.dumps(changes["payload"])
    # What dev's gateway adds to its document for this worker: the very same channels.
    hosted = json.loads(
        AsyncAPI(documentation_broker(spec, configured)).to_specification().to_json()
    )
    for part in ("channels", "operations", "components"):
        assert hosted[part] == document[part], part


def _payload(document: dict[str, Any], channel_title: str) -> dict[str, Any]:
    """The payload schema of the channel titled ``channel_title`` (FastStream's layout)."""
    [message] = [
        m
        for name, m in document["components"]["messages"].items()
        if name.startswith(f"{channel_title}:")
    ]
    name = message["payload"]["$ref"].rpartition("/")[2]
    payload: dict[str, Any] = document["components"]["schemas"][name]
    return payload


def _is_entitlement_change(payload: dict[str, Any]) -> bool:
    """A batch of EntitlementChange values: its fields, and no BillingEvent union."""
    items = payload["items"]
    return (
        "oneOf" not in items and items["properties"].keys() == EntitlementChange.model_fields.keys()
    )


def test_a_worker_consuming_entitlement_changes_documents_their_schema() -> None:
    spec = toy_spec("toy", BILLING_EVENTS, changes_topic=ENTITLEMENT_CHANGES)
    document = json.loads(
        AsyncAPI(documentation_broker(spec, CoreSettings())).to_specification().to_json()
    )

    assert _is_entitlement_change(_payload(document, f"{ENTITLEMENT_CHANGES}:toy"))
    billing = _payload(document, f"{BILLING_EVENTS}:toy")["items"]
    assert {ref["$ref"].rpartition("/")[2] for ref in billing["oneOf"]} >= {"SubscriptionEvent"}


async def test_a_running_worker_documents_each_subscription_s_contract_type(
    settings: FleetSettings,
) -> None:
    name, topic, changes = unique("docs"), unique("asyncapi.in"), unique("asyncapi.changes")
    spec = toy_spec(name, topic, changes_topic=changes)
    configured = worker_settings(settings, worker_http_port=free_port())
    document = await _served(spec, configured, topic, changes)

    assert _is_entitlement_change(_payload(document, f"{changes}:{name}"))
    assert "oneOf" in _payload(document, f"{topic}:{name}")["items"]  # the BillingEvent union
