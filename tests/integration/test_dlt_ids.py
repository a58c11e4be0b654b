"""Dead letters have ids: replays are recorded by id, so a broker that starts again empty
(reusing offsets) does not make a new letter look replayed; letters without an id (written
before ids) still work by partition:offset."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from contracts import BillingEvent, dead_letter_topic
from fleet.embedded import EmbeddedKafka
from tests.fleet_settings import FleetSettings
from tests.integration.test_cli import COMMAND, clean_env
from tests.runtime_toy import (
    applied,
    create_topics,
    make_events,
    prepare_tables,
    publish,
    publish_events,
    running,
    toy_spec,
    unique,
    wait_for,
    wait_for_dead_letters,
    worker_settings,
)
from workers.runtime.dlt_admin import DeadLetter, list_dead_letters, read_records

pytestmark = pytest.mark.integration


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``billing-fleet ARGS`` as an operator runs it: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def execute(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def test_new_letter_at_a_replayed_offset_after_a_broker_restart_is_not_replayed(
    settings: FleetSettings,
) -> None:
    assert settings.database_url
    url = settings.database_url
    name, topic = unique("toy"), unique("runtime.dlt-ids")
    dlt = dead_letter_topic(topic, name)
    await prepare_tables(url)
    first_event, second_event = make_events(2)
    # A broker of its own: it is restarted, which empties it (Tansu keeps memory only).
    with EmbeddedKafka() as kafka:
        worker = worker_settings(
            settings, kafka_bootstrap_servers=kafka.bootstrap_servers, worker_max_attempts=1
        )
        env = clean_env(KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers, DATABASE_URL=url)

        async def dead_letter(event: BillingEvent) -> DeadLetter:
            """``event`` published, rejected by the worker, and its one dead letter."""
            await create_topics(worker, topic, dlt, partitions=1)
            stripe_id = event.source.stripe_event_id
            await execute(url, "INSERT INTO toy_rejects VALUES ($1)", stripe_id)
            await publish_events(kafka.bootstrap_servers, topic, [event])
            async with running(toy_spec(name, topic), worker):
                [letter] = await wait_for_dead_letters(kafka.bootstrap_servers, dlt, 1)
            await execute(url, "DELETE FROM toy_rejects WHERE stripe_event_id = $1", stripe_id)
            return letter

        first = await dead_letter(first_event)
        assert uuid.UUID(first.letter_id) and first.position == "0:0"
        code, out, err = await cli(env, "dlt", "replay", dlt, "--all")
        assert (code, "1 replayed" in out) == (0, True), err
        code, out, err = await cli(env, "dlt", "list", "--worker", name)
        assert f"  {first.letter_id}\t0:0\tworkers.runtime.spec.Poison\treplayed" in out, out

        kafka.stop()
        kafka.start()  # empty, on the same port: offsets start at 0 again
        second = await dead_letter(second_event)

        assert second.position == first.position and second.letter_id != first.letter_id
        # Before ids, the replay recorded at 0:0 made this new letter count as replayed.
        [summary] = await list_dead_letters(kafka.bootstrap_servers, url, name)
        assert (summary.messages, summary.replayed) == (1, 0)
        code, out, err = await cli(env, "dlt", "list", "--worker", name)
        assert code == 0, err
        assert f"{dlt}\tmessages=1\treplayed=0" in out
        assert f"  {second.letter_id}\t0:0\tworkers.runtime.spec.Poison\tnot replayed" in out
        # `dlt show` takes what `dlt list` prints.
        for ref in (second.letter_id, "0:0"):
            code, out, err = await cli(env, "dlt", "show", dlt, ref)
            assert code == 0, err
            assert f"id {second.letter_id}" in out
            assert second_event.source.stripe_event_id in out
        code, out, err = await cli(env, "dlt", "replay", dlt, "--all")
        assert (code, "1 replayed" in out) == (0, True), err

        async with running(toy_spec(name, topic), worker):
            await wait_for(
                lambda: _applied_is(url, name, {second_event.source.stripe_event_id}),
                message="the new letter replayed and applied",
            )
        code, out, err = await cli(env, "dlt", "list", "--worker", name)
        assert f"  {second.letter_id}\t0:0\tworkers.runtime.spec.Poison\treplayed" in out
        # By id, a letter is replayed again even if it was; an unknown id is an error.
        code, out, err = await cli(env, "dlt", "replay", dlt, "--id", second.letter_id)
        assert (code, "1 replayed" in out) == (0, True), err
        code, out, err = await cli(env, "dlt", "replay", dlt, "--id", str(uuid.uuid4()))
        assert code == 1 and "not in" in err

    rows = await execute(
        url,
        "SELECT dlt_id, replays FROM dlt_replays WHERE topic = $1 ORDER BY first_replayed_at",
        dlt,
    )
    assert [(row["dlt_id"], row["replays"]) for row in rows] == [
        (first.letter_id, 1),
        (second.letter_id, 2),
    ]


async def _applied_is(url: str, name: str, expected: set[str]) -> bool:
    return set(await applied(url, name)) == expected


async def test_letters_written_before_ids_are_listed_shown_and_replayed_by_position(
    settings: FleetSettings, kafka: Any
) -> None:
    assert settings.database_url
    bootstrap, url = kafka.bootstrap_servers, settings.database_url
    origin, group = unique("runtime.legacy"), unique("toy")
    dlt = dead_letter_topic(origin, group)
    await create_topics(settings, origin, dlt, partitions=1)
    headers = [
        ("ce_type", b"subscription.updated"),
        ("dlt_error_class", b"workers.runtime.spec.Poison"),
        ("dlt_origin_topic", origin.encode()),
        ("dlt_origin_partition", b"0"),
        ("dlt_origin_offset", b"7"),
        ("dlt_consumer_group", group.encode()),
    ]
    await publish(bootstrap, dlt, [(b"legacy-value", b"cus_legacy", headers)])
    env = clean_env(KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=url)

    code, out, err = await cli(env, "dlt", "list", "--worker", group)
    assert code == 0, err
    assert "  -\t0:0\tworkers.runtime.spec.Poison\tnot replayed" in out
    for args in (["0:0"], ["0", "0"]):  # P:O as listed, and the form before ids
        code, out, err = await cli(env, "dlt", "show", dlt, *args)
        assert code == 0, err
        assert "legacy-value" in out and "id - " in out
    code, out, err = await cli(env, "dlt", "replay", dlt, "--all")
    assert (code, "1 replayed" in out) == (0, True), err
    code, out, err = await cli(env, "dlt", "replay", dlt, "--all")
    assert (code, "0 replayed" in out) == (0, True), err

    [record] = await read_records(bootstrap, origin)
    assert (record.value, record.key) == (b"legacy-value", b"cus_legacy")
    assert ("ce_type", b"subscription.updated") in record.headers
    assert not [name for name, _ in record.headers if name.startswith("dlt_")]
    rows = await execute(
        url, 'SELECT dlt_id, partition, "offset" FROM dlt_replays WHERE topic = $1', dlt
    )
    assert [tuple(row) for row in rows] == [(None, 0, 0)]
