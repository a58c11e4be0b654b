"""The ``billing-fleet`` console script, run as a subprocess like an operator would."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from billing_fleet.kafka_admin import broker_reachable
from billing_fleet.migrate import ADVISORY_LOCK_KEY
from contracts import BILLING_EVENTS
from fleet.embedded import free_port
from tests.cli_support import COMMAND as COMMAND  # other tests import these from here
from tests.cli_support import (
    children,
    clean_env,
    is_running,
    run,
    running_args,
    start_dev,
    tail,
    wait_ready,
)
from tests.runtime_toy import wait_for

__all__ = ["COMMAND", "clean_env"]

pytestmark = pytest.mark.integration

ROOT = str(Path(__file__).resolve().parents[2])


def test_help_lists_the_commands() -> None:
    result = run("--help", env=clean_env())

    assert result.returncode == 0, result.stderr
    for command in ("dev", "gateway", "migrate", "send-test-event"):
        assert command in result.stdout


# What only `dev` needs: its workers' reloading, its banner (PyJWT), the embedded servers.
# (watchfiles itself is loaded anyway: uvicorn imports it for its --reload.)
DEV_ONLY = tuple(
    f"fleet.{name}" for name in ("dev", "dev_workers", "dev_banner", "embedded", "command_settings")
)


@pytest.mark.parametrize(
    ("command", "not_loaded"),
    [
        (["gateway"], (*DEV_ONLY, "workers")),
        (["worker", "entitlement"], (*DEV_ONLY, "api_gateway", "jwt")),
    ],
)
def test_production_processes_load_nothing_of_dev(
    command: list[str], not_loaded: tuple[str, ...]
) -> None:
    # Refused for want of a server, once it imported what it runs: Python lists the imports.
    result = run(*command, env=clean_env(PYTHONPROFILEIMPORTTIME="1"))

    assert result.returncode == 2, result.stderr[-2000:]
    loaded = {
        line.rpartition("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "billing_fleet.signals" in loaded  # it got as far as its signal handling
    assert {
        module
        for module in loaded
        if any(module == name or module.startswith(f"{name}.") for name in not_loaded)
    } == set()


async def test_migrate_applies_then_finds_nothing_to_do(create_database: Any) -> None:
    env = clean_env(DATABASE_URL=await create_database())

    first, second = run("migrate", env=env), run("migrate", env=env)

    assert first.returncode == 0, first.stderr
    assert "applied workers.runtime/0001_runtime.sql" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout


async def test_migrate_applies_an_unregistered_declaration_s_migrations_too(
    create_database: Any,
) -> None:
    env = clean_env(
        DATABASE_URL=await create_database(),
        BILLING_WORKER_DECLARATION="tests.toy_worker:DECLARATION",
        PYTHONPATH=ROOT,  # where `tests.toy_worker` is importable
    )

    result = run("migrate", env=env)

    assert result.returncode == 0, result.stderr
    assert "applied workers.entitlement/0001_entitlements.sql" in result.stdout
    assert result.stdout.splitlines()[-2:] == [
        "applied tests.toy_worker/0001_toy.sql",
        "applied tests.toy_worker/0002_toy_down.sql",
    ]


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


async def test_dev_serves_a_signed_event_and_stops_everything_on_sigint(
    create_database: Any, kafka_messages: Any, tmp_path: Path
) -> None:
    gateway_port, kafka_port = free_port(), free_port()
    env = clean_env(
        DATABASE_URL=await create_database(),
        BILLING_GATEWAY_PORT=str(gateway_port),
        BILLING_DEV_KAFKA_PORT=str(kafka_port),
        BILLING_DEV_DATA_DIR=str(tmp_path / "dev-data"),
    )
    dev = await start_dev(env, tmp_path / "dev.log")
    try:
        secret = dev.value("webhook secret").split()[0]
        assert secret.startswith("whsec_")
        base = f"http://127.0.0.1:{gateway_port}"
        await wait_ready(base)

        url = f"{base}/webhooks/stripe"
        sent = run("send-test-event", "--url", url, "--secret", secret, env=clean_env())
        assert sent.returncode == 0, sent.stdout + sent.stderr
        customer_line, subscription_line, ids = sent.stdout.splitlines()
        assert customer_line.split()[:2] == ["customer.created", "200"]
        stripe_type, status, body = subscription_line.split(maxsplit=2)
        assert (stripe_type, status) == ("customer.subscription.created", "200")
        accepted = json.loads(body)
        assert accepted["type"] == "subscription.activated"
        assert ids == "customer cus_dev_test  user user_dev_test"

        # The banner's curl reads what the event granted to send-test-event's user.
        user_curl = dev.command_after("read the test user's entitlements")
        assert user_curl[:2] == ["curl", "-H"] and user_curl[3] == f"{base}/v1/entitlements"
        header, _, token = user_curl[2].partition(": ")
        async with httpx.AsyncClient(headers={header: token}) as client:

            async def entitled() -> bool:
                response = await client.get(user_curl[3])
                assert response.status_code == 200, response.text
                return bool(response.json()["entitlements"])

            await wait_for(entitled, timeout=30, message=f"never entitled:\n{tail(dev.log)}")
            mine = (await client.get(user_curl[3])).json()
        assert mine["user_id"] == "user_dev_test"
        assert "sso" in {e["feature"] for e in mine["entitlements"]}

        records = await kafka_messages(
            BILLING_EVENTS, expect=2, bootstrap_servers=f"127.0.0.1:{kafka_port}"
        )
        assert accepted["id"] in [json.loads(record.value)["id"] for record in records]

        [(tansu_pid, tansu_args)] = [c for c in children(dev.process.pid) if "tansu" in c[1]]
        assert f"127.0.0.1:{kafka_port}" in tansu_args
    except BaseException:
        await dev.kill()
        raise

    assert await dev.stop(signal.SIGINT, timeout=15) == 0, tail(dev.log)

    assert not is_running(tansu_pid)
    assert f"tcp://127.0.0.1:{kafka_port}" not in running_args()
    assert not await broker_reachable(f"127.0.0.1:{kafka_port}", timeout=0.5)


async def test_migrate_gives_up_on_a_held_lock_with_one_line(create_database: Any) -> None:
    url = await create_database()
    env = clean_env(DATABASE_URL=url, BILLING_MIGRATE_LOCK_TIMEOUT_SECONDS="0.3")
    holder = await asyncpg.connect(url)  # another `migrate`, still running
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        refused = run("migrate", env=env)
        await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await holder.close()

    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stderr.splitlines() == [
        "billing-fleet migrate: another migrate has held the migration lock for more than "
        "0.3 s (BILLING_MIGRATE_LOCK_TIMEOUT_SECONDS); nothing applied: run it again once "
        "that one has finished"
    ]
    assert run("migrate", env=env).returncode == 0
