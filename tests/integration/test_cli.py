"""The ``billing-fleet`` console script, run as a subprocess like an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from billing_fleet.embedded import free_port
from billing_fleet.kafka_admin import broker_reachable
from contracts import BILLING_EVENTS

pytestmark = pytest.mark.integration

SCRIPT = shutil.which("billing-fleet", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "billing_fleet.cli"]
# Settings a developer may have exported that would change what the commands do.
CONFIG_VARIABLES = (
    "DATABASE_URL",
    "BILLING_DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "BILLING_KAFKA_BOOTSTRAP_SERVERS",
    "BILLING_STRIPE_WEBHOOK_SECRETS",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    return {**env, **extra}


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def children(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return [
        (int(p), args) for p, _, args in (line.strip().partition(" ") for line in out.splitlines())
    ]


def running_args() -> str:
    return subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True).stdout


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_help_lists_the_commands() -> None:
    result = run("--help", env=clean_env())

    assert result.returncode == 0, result.stderr
    for command in ("dev", "gateway", "migrate", "send-test-event"):
        assert command in result.stdout


async def test_migrate_applies_then_finds_nothing_to_do(create_database: Any) -> None:
    env = clean_env(DATABASE_URL=await create_database())

    first, second = run("migrate", env=env), run("migrate", env=env)

    assert first.returncode == 0, first.stderr
    assert "applied workers.runtime/0001_runtime.sql" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout


async def test_worker_refuses_a_database_behind_its_release(
    create_database: Any, kafka: Any
) -> None:
    """A new release's worker must not write to a schema without its columns (an upgrade
    that started workers before `migrate`): it exits and says what to run."""
    url = await create_database()
    env = clean_env(DATABASE_URL=url, KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers)

    result = run("worker", "entitlement", env=env)

    assert result.returncode == 1, result.stderr
    assert "run `billing-fleet migrate` first" in result.stderr
    assert "workers.entitlement/0002_source_bases_addons.sql" in result.stderr
    conn = await asyncpg.connect(url)
    try:  # it wrote nothing: not even the migrations table
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


def test_migrate_without_a_database_url_says_so() -> None:
    result = run("migrate", env=clean_env())

    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_gateway_without_kafka_or_secret_says_so() -> None:
    result = run("gateway", env=clean_env())

    assert result.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS and BILLING_STRIPE_WEBHOOK_SECRETS" in result.stderr


async def _banner_value(stdout: asyncio.StreamReader, label: str, log: Path) -> str:
    """The value of banner line ``label`` (the banner is printed once dev is ready to serve)."""
    async with asyncio.timeout(30):
        while line := (await stdout.readline()).decode():
            if line.strip().startswith(label):
                return line.split(maxsplit=2)[2].strip()
    raise AssertionError(f"dev printed no {label!r}; its log:\n{tail(log)}")


async def test_dev_serves_a_signed_event_and_stops_everything_on_sigint(
    create_database: Any, kafka_messages: Any, tmp_path: Path
) -> None:
    gateway_port, kafka_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    env = clean_env(
        DATABASE_URL=await create_database(),
        BILLING_GATEWAY_PORT=str(gateway_port),
        BILLING_DEV_KAFKA_PORT=str(kafka_port),
        BILLING_DEV_DATA_DIR=str(tmp_path / "dev-data"),
    )
    with log.open("wb") as stderr:
        dev = await asyncio.create_subprocess_exec(
            *COMMAND, "dev", env=env, stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        assert dev.stdout is not None
        secret = await _banner_value(dev.stdout, "webhook secret", log)
        assert secret.startswith("whsec_")
        base = f"http://127.0.0.1:{gateway_port}"
        async with httpx.AsyncClient(base_url=base) as client:
            async with asyncio.timeout(20):
                while True:
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
            assert (await client.get("/readyz")).json()["ready"] is True

        url = f"{base}/webhooks/stripe"
        sent = run("send-test-event", "--url", url, "--secret", secret, env=clean_env())
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.splitlines()[0] == "200"
        accepted = json.loads(sent.stdout.splitlines()[1])
        assert accepted["type"] == "subscription.activated"

        [record] = await kafka_messages(
            BILLING_EVENTS, expect=1, bootstrap_servers=f"127.0.0.1:{kafka_port}"
        )
        assert json.loads(record.value)["id"] == accepted["id"]

        [(tansu_pid, tansu_args)] = [c for c in children(dev.pid) if "tansu" in c[1]]
        assert f"127.0.0.1:{kafka_port}" in tansu_args
    except BaseException:
        if dev.returncode is None:
            dev.kill()
            await dev.wait()
        raise

    dev.send_signal(signal.SIGINT)
    async with asyncio.timeout(15):
        assert await dev.wait() == 0, tail(log)

    assert not is_running(tansu_pid)
    assert f"tcp://127.0.0.1:{kafka_port}" not in running_args()
    assert not await broker_reachable(f"127.0.0.1:{kafka_port}", timeout=0.5)
