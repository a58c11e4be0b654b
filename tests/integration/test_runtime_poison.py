"""Poison: retried, dead-lettered unchanged while the partition moves on, then replayed."""

from __future__ import annotations

import asyncpg
import pytest

from contracts import dead_letter_topic
from tests.fleet_settings import FleetSettings
from tests.integration.test_cli import COMMAND, clean_env
from tests.runtime_toy import (
    applied,
    create_topics,
    event_message,
    make_events,
    metric,
    prepare_tables,
    publish,
    running,
    toy_spec,
    unique,
    wait_for,
    wait_for_dead_letters,
    worker_settings,
)
from workers.runtime.dlt_admin import (
    list_dead_letters,
    replay_dead_letters,
)

pytestmark = pytest.mark.integration

DLT_HEADERS = {
    "dlt_error_class",
    "dlt_error_message",
    "dlt_attempts",
    "dlt_first_failure_at",
    "dlt_last_failure_at",
    "dlt_origin_topic",
    "dlt_origin_partition",
    "dlt_origin_offset",
    "dlt_consumer_group",
}


async def test_poison_is_dead_lettered_then_replayed_once(settings: FleetSettings) -> None:
    settings = worker_settings(settings)
    assert settings.kafka_bootstrap_servers and settings.database_url
    bootstrap, url = settings.kafka_bootstrap_servers, settings.database_url
    name, topic = unique("toy"), unique("runtime.poison")
    dlt = dead_letter_topic(topic, name)
    await prepare_tables(url)
    await create_topics(settings, topic, partitions=1)
    events = make_events(5)
    poison = events[1]
    await _reject(url, poison.source.stripe_event_id)
    messages = [event_message(e) for e in events]
    # A message that is not a billing event at all, behind the poison one.
    messages.insert(3, (b"{not json", b"cus_toy0", [("ce_type", b"subscription.updated")]))
    await publish(bootstrap, topic, messages)

    async with running(toy_spec(name, topic), settings):
        good = {e.source.stripe_event_id for e in events if e is not poison}
        await wait_for(lambda: _applied_is(url, name, good), message="good events applied")
        letters = await wait_for_dead_letters(bootstrap, dlt, 2)

        by_origin = {letter.header("dlt_origin_offset"): letter for letter in letters}
        first, second = by_origin["1"], by_origin["3"]
        value, key, headers = messages[1]
        assert (first.value, first.key) == (value, key)
        assert dict(headers).items() <= dict(first.headers).items()
        assert {n for n, _ in first.headers} >= DLT_HEADERS
        assert first.header("dlt_error_class") == "workers.runtime.spec.Poison"
        assert poison.source.stripe_event_id in first.header("dlt_error_message")
        assert first.header("dlt_attempts") == str(settings.worker_max_attempts)
        assert (first.header("dlt_origin_topic"), first.header("dlt_origin_offset")) == (topic, "1")
        assert first.header("dlt_origin_partition") == "0"
        assert first.header("dlt_consumer_group") == name
        assert first.header("dlt_first_failure_at") <= first.header("dlt_last_failure_at")
        assert second.value == b"{not json"
        assert second.header("dlt_error_class") == "pydantic_core._pydantic_core.ValidationError"
        assert metric("billing_dead_letters_total", worker=name) == 2
        assert metric("billing_retries_total", worker=name, reason="poison") == 4

        # The catalog is fixed: the replayed message is applied, exactly once.
        await _unreject(url, poison.source.stripe_event_id)
        replayed = await replay_dead_letters(
            bootstrap, url, dlt, offsets=[(first.partition, first.offset)]
        )
        assert [r.offset for r in replayed] == [first.offset]
        await wait_for(
            lambda: _applied_is(url, name, good | {poison.source.stripe_event_id}),
            message="replayed event applied",
        )
        assert metric("billing_dlt_replays_total", worker=name) == 1

        # Once more through the CLI: a harmless duplicate for the worker.
        env = clean_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=url)
        result = await _cli(
            env, "dlt", "replay", dlt, "--offset", f"{first.partition}:{first.offset}"
        )
        assert result[0] == 0, result[2]
        assert "1 replayed" in result[1]
        await wait_for(
            lambda: _at_least(metric("billing_duplicates_skipped_total", worker=name), 1),
            message="second replay skipped as a duplicate",
        )

    assert sorted(await applied(url, name)) == sorted(e.source.stripe_event_id for e in events)
    [summary] = await list_dead_letters(bootstrap, url, name)
    assert (summary.messages, summary.replayed) == (2, 1)
    assert summary.by_error_class["workers.runtime.spec.Poison"] == 1
    code, out, err = await _cli(env, "dlt", "replay", dlt, "--all")
    assert code == 0, err
    assert "1 replayed" in out  # only the never-replayed one (the invalid JSON)
    code, out, err = await _cli(env, "dlt", "list", "--worker", name)
    assert code == 0, err
    assert f"{dlt}\tmessages=2\treplayed=2" in out
    code, out, err = await _cli(env, "dlt", "show", dlt, str(first.partition), str(first.offset))
    assert code == 0, err
    assert "dlt_error_class: workers.runtime.spec.Poison" in out
    assert poison.source.stripe_event_id in out


async def _at_least(value: float, expected: float) -> bool:
    return value >= expected


async def _applied_is(url: str, name: str, expected: set[str]) -> bool:
    rows = await applied(url, name)
    assert len(rows) == len(set(rows)), "an event was applied twice"
    return set(rows) == expected


async def _reject(url: str, stripe_event_id: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO toy_rejects VALUES ($1)", stripe_event_id)
    finally:
        await conn.close()


async def _unreject(url: str, stripe_event_id: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM toy_rejects WHERE stripe_event_id = $1", stripe_event_id)
    finally:
        await conn.close()


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
