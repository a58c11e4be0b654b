"""A process validates only the settings of what it runs: the gateway starts with invalid
worker variables set, the worker with invalid gateway variables, and each still refuses
an invalid variable of its own (one line naming it, exit status 2)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleet.embedded import free_port
from tests.cli_support import COMMAND, NEUTRAL_CWD, clean_env, run, tail, wait_ready
from tests.fleet_settings import FleetSettings
from tests.runtime_toy import create_topics, prepare_tables, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

INVALID_WORKER = {
    "BILLING_WORKER_LANES": "many",
    "BILLING_ENTITLEMENT_PAST_DUE_GRACE_DAYS": "-1",
}
INVALID_GATEWAY = {
    "BILLING_GATEWAY_PORT": "notaport",
    "BILLING_JWT_HS256_SECRET": "short",
    "BILLING_STRIPE_WEBHOOK_TOLERANCE_SECONDS": "0",
}


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*COMMAND, *command], env=env, stdout=out, stderr=out, cwd=NEUTRAL_CWD
        )


async def started(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> None:
    """Start ``command``, wait until ``ready_url``'s /readyz answers 200, stop it."""
    process = start(command, env, log)
    try:
        await wait_ready(ready_url, timeout=45)
    except TimeoutError:
        raise AssertionError(f"{command} never got ready:\n{tail(log)}") from None
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)


def servers(settings: FleetSettings) -> dict[str, str]:
    assert settings.kafka_bootstrap_servers and settings.database_url
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
    }


async def test_the_gateway_starts_with_invalid_worker_settings(
    settings: FleetSettings, tmp_path: Path
) -> None:
    port = free_port()
    env = clean_env(
        **servers(settings),
        **INVALID_WORKER,
        BILLING_STRIPE_WEBHOOK_SECRETS="whsec_isolation",
        BILLING_GATEWAY_PORT=str(port),
    )
    await started(["gateway"], env, f"http://127.0.0.1:{port}", tmp_path / "gateway.log")


async def test_the_worker_starts_with_invalid_gateway_settings(
    settings: FleetSettings, tmp_path: Path
) -> None:
    # The toy worker (its own group and topic: the session's entitlement group keeps its
    # offsets), run through the same `worker NAME` path as a registered one.
    assert settings.database_url
    name, topic = unique("toy"), unique("isolation")
    await prepare_tables(settings.database_url)
    await create_topics(settings, topic)
    port = free_port()
    env = clean_env(
        **servers(settings),
        **INVALID_GATEWAY,
        BILLING_WORKER_DECLARATION="tests.toy_worker:DECLARATION",
        TOY_NAME=name,
        TOY_TOPIC=topic,
        BILLING_WORKER_HTTP_PORT=str(port),
        BILLING_WORKER_SESSION_TIMEOUT_MS="1000",
        BILLING_KAFKA_TOPIC_PARTITIONS="2",
        PYTHONPATH=str(ROOT),
    )
    await started(["worker", name], env, f"http://127.0.0.1:{port}", tmp_path / "worker.log")


@pytest.mark.parametrize(
    ("command", "own"),
    [
        (["gateway"], "BILLING_GATEWAY_PORT"),
        (["gateway"], "BILLING_JWT_HS256_SECRET"),
        (["worker", "entitlement"], "BILLING_WORKER_LANES"),
        (["worker", "entitlement"], "BILLING_ENTITLEMENT_PAST_DUE_GRACE_DAYS"),
    ],
)
def test_each_still_refuses_its_own(command: list[str], own: str, kafka: Any) -> None:
    invalid = {**INVALID_WORKER, **INVALID_GATEWAY}
    env = clean_env(KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers, **{own: invalid[own]})

    result = run(*command, env=env)

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0].startswith(f"billing-fleet: {own}: "), result.stderr
