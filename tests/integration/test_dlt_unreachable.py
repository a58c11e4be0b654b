"""``billing-fleet dlt`` with Kafka or PostgreSQL not there: one line on stderr, exit
status 1, no traceback, nothing left unclosed."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from billing_fleet.kafka_admin import read_all
from fleet.embedded import free_port
from tests.cli_support import clean_env, run
from tests.integration.test_cli_errors import one_line
from workers.runtime.dlt_admin import dead_letter_topics

pytestmark = pytest.mark.integration

TOPIC = "billing.events.v1.entitlement.dlt"
COMMANDS = {
    "list": ["dlt", "list"],
    "show": ["dlt", "show", TOPIC, "0:0"],
    "replay": ["dlt", "replay", TOPIC, "--all"],
}


@pytest.mark.parametrize("action", COMMANDS)
def test_kafka_unreachable_is_one_line(action: str) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    env = clean_env(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        DATABASE_URL=f"postgresql://billing:s3cret@127.0.0.1:{free_port()}/billing",
    )

    result = run(*COMMANDS[action], env=env, timeout=30)

    assert result.returncode == 1
    assert one_line(result) == (
        f"billing-fleet dlt {action}: Kafka at {bootstrap} does not answer "
        "(KAFKA_BOOTSTRAP_SERVERS)"
    )


@pytest.mark.parametrize("action", ["list", "replay"])  # the two that read the replays
def test_postgresql_unreachable_is_one_line(action: str, kafka: Any) -> None:
    port = free_port()
    env = clean_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DATABASE_URL=f"postgresql://billing:s3cret@127.0.0.1:{port}/billing",
    )

    result = run(*COMMANDS[action], env=env, timeout=30)

    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(
        f"billing-fleet dlt {action}: PostgreSQL at 127.0.0.1:{port} (DATABASE_URL) is unreachable"
    ), line
    assert "s3cret" not in line


async def test_a_database_error_past_the_checks_is_one_line(
    kafka: Any, create_database: Any
) -> None:
    """PostgreSQL answers, but the replays table is not there (not migrated)."""
    env = clean_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers, DATABASE_URL=await create_database()
    )

    result = run(*COMMANDS["list"], env=env, timeout=30)

    assert result.returncode == 1
    assert one_line(result) == (
        'billing-fleet dlt list: PostgreSQL failed (DATABASE_URL): relation "dlt_replays" '
        "does not exist"
    )


@pytest.mark.parametrize("read", [read_all, lambda bootstrap, _: dead_letter_topics(bootstrap)])
async def test_a_consumer_that_cannot_start_is_closed(
    read: Callable[[str, str], Awaitable[object]],
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(KafkaConnectionError):
            await read(bootstrap, TOPIC)
        gc.collect()  # an unclosed consumer says so when it is collected

    assert [str(w.message) for w in caught if "Unclosed" in str(w.message)] == []
