"""The workers' ``type`` label of dead-lettered messages comes from a known set."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from contracts import dead_letter_topic
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import (
    create_topics,
    prepare_tables,
    publish,
    running,
    toy_spec,
    unique,
    wait_for_dead_letters,
    worker_settings,
)

pytestmark = pytest.mark.integration

MADE_UP = 100


def type_labels(worker: str) -> set[str]:
    return {
        sample.labels["type"]
        for metric in REGISTRY.collect()
        if metric.name == "billing_events_handled"
        for sample in metric.samples
        if sample.labels.get("worker") == worker
    }


async def test_made_up_ce_types_of_dead_letters_are_counted_as_other(
    settings: FleetSettings,
) -> None:
    # One attempt each: nothing to wait for between retries.
    settings = worker_settings(settings, worker_max_attempts=1)
    assert settings.kafka_bootstrap_servers and settings.database_url
    name, topic = unique("toy"), unique("runtime.labels")
    await prepare_tables(settings.database_url)
    await create_topics(settings, topic, partitions=1)
    # Not billing events at all (poison), each with a ce_type a producer made up.
    messages = [
        (b"{not json", b"cus_1", [("ce_type", f"made.up.{i}".encode())]) for i in range(MADE_UP)
    ]
    messages.append((b"{not json", b"cus_1", [("ce_type", b"x" * 500_000)]))
    messages.append((b"{not json", b"cus_1", [("ce_type", b"invoice.paid")]))
    messages.append((b"{not json", b"cus_1", []))
    await publish(settings.kafka_bootstrap_servers, topic, messages)

    async with running(toy_spec(name, topic), settings):
        await wait_for_dead_letters(
            settings.kafka_bootstrap_servers, dead_letter_topic(topic, name), len(messages)
        )

    assert type_labels(name) == {"other", "invoice.paid", "unknown"}
