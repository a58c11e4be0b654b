"""``billing-fleet dev`` as a developer uses it: the quick start from a second terminal that
has no configuration, a catalog fixed while dev runs, the terminal closing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES, dead_letter_topic
from fleet.embedded import free_port
from tests.cli_support import (
    EXAMPLE_CATALOG,
    Dev,
    children,
    clean_env,
    is_running,
    run,
    running_args,
    start_dev,
    tail,
    wait_ready,
)
from tests.stripe_fixtures import load_event, signed

pytestmark = pytest.mark.integration

DEAD_LETTERS = dead_letter_topic(BILLING_EVENTS, "entitlement")
INVOICE_DEAD_LETTERS = dead_letter_topic(BILLING_EVENTS, "invoice")
NOTIFICATION_DEAD_LETTERS = {
    dead_letter_topic(topic, "notification")
    for topic in (BILLING_EVENTS, INVOICES, ENTITLEMENT_CHANGES)
}
PRO_FEATURES = {"sso", "projects", "api_calls", "storage_gb"}


def catalog_without_pro(path: Path) -> None:
    """The example catalog without `pro` (and its add-ons): send-test-event's price is
    unknown to it."""
    products = yaml.safe_load(EXAMPLE_CATALOG.read_text())["products"]
    kept = {name: products[name] for name in ("starter", "export_pass_30d", "lifetime_deal")}
    path.write_text(yaml.safe_dump({"version": 1, "products": kept}))


def logged(log: Path, message: str) -> bool:
    return any(json.loads(line).get("message") == message for line in log.read_text().splitlines())


async def until(condition: Any, timeout: float, what: str, log: Path) -> None:
    """Until ``await condition()`` is true; at ``timeout`` fail with ``what`` and dev's log."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}; dev's log:\n{tail(log)}") from None


async def curl(command: list[str]) -> httpx.Response:
    """What the printed ``curl -H 'Authorization: Bearer …' URL`` asks for."""
    assert command[:2] == ["curl", "-H"], command
    name, _, value = command[2].partition(": ")
    async with httpx.AsyncClient() as client:
        return await client.get(command[3], headers={name: value})


def assert_every_log_line_is_json(dev: Dev, stdout_rest: str) -> None:
    lines = dev.log.read_text().splitlines()
    assert lines, "dev logged nothing"
    for line in lines:
        assert "\x1b[" not in line, line
        assert isinstance(json.loads(line), dict), line
    assert stdout_rest.strip() == "", f"dev printed after its banner:\n{stdout_rest}"
    assert "\x1b[" not in "\n".join(dev.banner)


async def test_quick_start_fix_the_catalog_and_replay_from_a_second_terminal(
    create_database: Any, kafka_messages: Any, tmp_path: Path
) -> None:
    """A price missing from the catalog dead-letters the test event; fixing the file makes
    dev reload the worker; `dlt replay` from a terminal with no configuration (it finds
    dev's servers in .billing-fleet/dev.json) replays it into the reloaded worker; the
    printed curl commands then read the entitlement. Every log line is JSON."""
    catalog = tmp_path / "catalog.yaml"
    catalog_without_pro(catalog)
    gateway_port, kafka_port = free_port(), free_port()
    env = clean_env(
        DATABASE_URL=await create_database(),
        BILLING_GATEWAY_PORT=str(gateway_port),
        BILLING_DEV_KAFKA_PORT=str(kafka_port),
        BILLING_ENTITLEMENT_CATALOG_PATH=str(catalog),
        BILLING_WORKER_MAX_ATTEMPTS="1",
        BILLING_WORKER_SESSION_TIMEOUT_MS="3000",
    )
    second_terminal = clean_env()  # no server, secret or data dir: only the same directory
    dev = await start_dev(env, tmp_path / "dev.log", cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{gateway_port}"
        await wait_ready(base)
        state = tmp_path / ".billing-fleet" / "dev.json"
        assert state.stat().st_mode & 0o777 == 0o600
        mailbox = (tmp_path / ".billing-fleet" / "mail").resolve()
        [mail_line] = [line for line in dev.banner if line.startswith("  mail ")]
        assert f"{mailbox}/*.eml" in mail_line and mailbox.is_dir()
        assert json.loads(state.read_text())["gateway_url"] == base

        sent = run("send-test-event", env=second_terminal, cwd=tmp_path)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.splitlines()[-1] == "customer cus_dev_test  user user_dev_test"
        [letter] = await kafka_messages(
            DEAD_LETTERS, expect=1, timeout=40, bootstrap_servers=f"127.0.0.1:{kafka_port}"
        )
        assert b"price_test_pro_monthly" in dict(letter.headers)["dlt_error_message"]

        catalog.write_text(EXAMPLE_CATALOG.read_text())

        async def reloaded() -> bool:
            return logged(dev.log, "worker reloaded: the new build starts")

        await until(reloaded, 20, "dev did not reload the worker", dev.log)
        migrated = run("migrate", env=second_terminal, cwd=tmp_path)
        assert migrated.returncode == 0 and "nothing to apply" in migrated.stdout, migrated
        replay = run("dlt", "replay", DEAD_LETTERS, "--all", env=second_terminal, cwd=tmp_path)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "1 replayed" in replay.stdout

        user_curl = dev.command_after("read the test user's entitlements")

        async def entitled() -> bool:
            response = await curl(user_curl)
            assert response.status_code == 200, response.text
            return bool(response.json()["entitlements"])

        await until(entitled, 60, "the replayed event was never applied", dev.log)
        mine = (await curl(user_curl)).json()
        assert mine["user_id"] == "user_dev_test"
        assert {e["feature"] for e in mine["entitlements"]} == PRO_FEATURES
        service = await curl(dev.command_after("read the test customer's as a service"))
        assert service.status_code == 200, service.text
        assert {e["feature"] for e in service.json()["entitlements"]} == PRO_FEATURES

        async with httpx.AsyncClient() as client:
            document = (await client.get(f"{base}/asyncapi.json")).json()
        addresses = {channel["address"] for channel in document["channels"].values()}
        assert addresses == {
            BILLING_EVENTS, ENTITLEMENT_CHANGES, DEAD_LETTERS, INVOICES, INVOICE_DEAD_LETTERS,
            *NOTIFICATION_DEAD_LETTERS,
        }  # fmt: skip
        actions = {(op["action"], op["channel"]["$ref"]) for op in document["operations"].values()}
        assert ("receive", f"#/channels/{BILLING_EVENTS}:entitlement") in actions
        assert ("send", f"#/channels/{ENTITLEMENT_CHANGES}") in actions
        assert ("receive", f"#/channels/{BILLING_EVENTS}:invoice") in actions
        assert ("send", f"#/channels/{INVOICES}") in actions
        assert ("receive", f"#/channels/{INVOICES}:notification") in actions
        assert ("receive", f"#/channels/{ENTITLEMENT_CHANGES}:notification") in actions
    except BaseException:
        await dev.kill()
        raise
    assert await dev.stop(signal.SIGINT) == 0, tail(dev.log)
    assert dev.process.stdout is not None
    assert_every_log_line_is_json(dev, (await dev.process.stdout.read()).decode())
    assert not state.exists()


def postgres_pids(data_dir: Path) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True)
    return [
        int(line.split()[0])
        for line in out.stdout.splitlines()
        if "postgres" in line and str(data_dir) in line
    ]


async def in_flight(client: httpx.AsyncClient) -> float:
    metrics = (await client.get("/metrics")).text
    [line] = [m for m in metrics.splitlines() if m.startswith("billing_webhooks_in_flight")]
    return float(line.split()[-1])


@pytest.fixture
def dev_dir() -> Iterator[Path]:
    """A directory outside pytest's tmp tree: pytest sessions starting meanwhile (other
    checkouts on this machine) reset that tree to mode 0700, which locks out the user the
    embedded PostgreSQL runs as under root."""
    path = Path(tempfile.mkdtemp(prefix="billing-fleet-dev-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_closing_the_terminal_drains_the_gateway_and_stops_everything(
    dev_dir: Path,
) -> None:
    """SIGHUP (the terminal closed) stops dev like Ctrl-C: a webhook in flight while the
    broker is frozen is still answered once it thaws, then the Tansu and PostgreSQL that
    dev started stop. Secrets the developer configured are printed nowhere."""
    gateway_port, kafka_port = free_port(), free_port()
    webhook_secret = "whsec_configured_by_the_developer"
    jwt_secret = "a-configured-jwt-secret-of-at-least-32-bytes"
    env = clean_env(
        BILLING_GATEWAY_PORT=str(gateway_port),
        BILLING_DEV_KAFKA_PORT=str(kafka_port),
        BILLING_STRIPE_WEBHOOK_SECRETS=webhook_secret,
        BILLING_JWT_HS256_SECRET=jwt_secret,
        BILLING_KAFKA_PUBLISH_TIMEOUT_SECONDS="20",
    )
    dev = await start_dev(env, dev_dir / "dev.log", cwd=dev_dir)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        printed = "\n".join(dev.banner)
        assert webhook_secret not in printed and jwt_secret not in printed
        assert "Bearer" not in printed  # no token signed with the developer's secret
        state = (dev_dir / ".billing-fleet" / "dev.json").read_text()
        assert webhook_secret not in state
        await wait_ready(base)
        pgdata = (dev_dir / ".billing-fleet" / "pgdata").resolve()
        assert postgres_pids(pgdata), "dev did not start its PostgreSQL"
        [tansu] = [pid for pid, args in children(dev.process.pid) if "tansu" in args]

        payload, headers = signed(
            load_event("customer.created__nijikokun__1"), secret=webhook_secret
        )
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            os.kill(tansu, signal.SIGSTOP)
            try:
                webhook = asyncio.create_task(
                    client.post("/webhooks/stripe", content=payload, headers=headers)
                )
                async with httpx.AsyncClient(base_url=base) as probe:

                    async def arrived() -> bool:
                        return await in_flight(probe) >= 1

                    await until(arrived, 10, "the webhook never reached the gateway", dev.log)
                dev.process.send_signal(signal.SIGHUP)
                await asyncio.sleep(1)  # uvicorn now waits for the request
                assert not webhook.done()
            finally:
                os.kill(tansu, signal.SIGCONT)
            response = await webhook
        assert response.status_code == 200, response.text
        assert response.json()["type"] == "customer.created"
        async with asyncio.timeout(30):
            assert await dev.process.wait() == 0, tail(dev.log)
    except BaseException:
        await dev.kill()
        raise
    assert postgres_pids(pgdata) == []
    assert not is_running(tansu)
    assert f"tcp://127.0.0.1:{kafka_port}" not in running_args()
    assert not (dev_dir / ".billing-fleet" / "dev.json").exists()
