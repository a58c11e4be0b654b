"""The embedded broker and database are real servers that start, serve, stop and restart."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from billing_fleet.kafka_admin import broker_reachable, ensure_topics
from fleet.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedUnavailable, free_port

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its (possibly foreign) parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def test_broker_serves_stops_and_restarts_on_the_same_port(kafka_messages: Any) -> None:
    broker = EmbeddedKafka()
    bootstrap = broker.bootstrap_servers
    with broker:
        await _produce(bootstrap, "lifecycle", b"before")
        before = await kafka_messages("lifecycle", expect=1, bootstrap_servers=bootstrap)
        assert [r.value for r in before] == [b"before"]
        first_pid = broker.pid
        assert first_pid is not None

        broker.stop()
        assert _gone(first_pid)
        assert not await broker_reachable(bootstrap, timeout=0.5)

        broker.start()
        assert broker.bootstrap_servers == bootstrap
        assert await broker_reachable(bootstrap, timeout=1)
        await _produce(bootstrap, "lifecycle", b"after")
        after = await kafka_messages("lifecycle", expect=1, bootstrap_servers=bootstrap)
        # Memory only: the restarted broker no longer has the first message.
        assert [r.value for r in after] == [b"after"]
        second_pid = broker.pid
    assert second_pid is not None and _gone(second_pid)


def test_port_in_use_is_a_clear_error() -> None:
    with EmbeddedKafka() as running, pytest.raises(EmbeddedUnavailable, match="in use"):
        EmbeddedKafka(running.port).start()


async def test_ensure_topics_creates_once_then_is_idempotent(kafka: Any) -> None:
    names = [f"ensure.{secrets.token_hex(4)}.{n}" for n in range(2)]

    first = await ensure_topics(kafka.bootstrap_servers, names, 3, 1)
    again = await ensure_topics(kafka.bootstrap_servers, [*names, names[0]], 3, 1)

    assert sorted(first) == sorted(names)
    assert again == []


async def test_kafka_messages_returns_what_was_produced_and_nothing_else(
    kafka: Any, kafka_messages: Any
) -> None:
    topic, empty = f"read.{secrets.token_hex(4)}", f"empty.{secrets.token_hex(4)}"
    for value in (b"one", b"two"):
        await _produce(kafka.bootstrap_servers, topic, value)

    assert [r.value for r in await kafka_messages(topic, expect=2)] == [b"one", b"two"]
    assert await kafka_messages(empty, expect=0, timeout=1) == []


async def test_broker_reachable_needs_a_kafka_answer_not_just_tcp() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert not await broker_reachable(f"127.0.0.1:{port}", timeout=0.5)
    assert not await broker_reachable(f"127.0.0.1:{free_port()}", timeout=0.5)


async def test_postgres_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pgdata")
    with server:
        conn = await asyncpg.connect(server.url)
        try:
            await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        finally:
            await conn.close()
        postmaster = int((tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0])

    assert _gone(postmaster)
    with server:
        conn = await asyncpg.connect(server.url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 42
        finally:
            await conn.close()
