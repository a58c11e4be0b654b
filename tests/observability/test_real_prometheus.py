"""Every dashboard and alert expression against Debian's real Prometheus scraping a real
gateway and entitlement worker: each parses and has series, and a poison webhook makes
the dead-letters alert expression true; /readyz is called first, so the readiness gauge
has series."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy import observability
from fleet.embedded import free_port
from tests.cli_support import COMMAND, clean_env, stop_all, tail
from tests.fleet_settings import FleetSettings
from tests.gateway import create_topics
from tests.gateway_process import GATEWAY
from tests.integration.test_entitlement_worker import (
    SYNCENGINE_CREATED,
    SYNCENGINE_PRICE,
    write_catalog,
)
from tests.jwt_tokens import AUDIENCE, HS256_SECRET, ISSUER
from tests.observability.promtool import promtool, require
from tests.stripe_fixtures import PRIMARY_SECRET, load_event, signed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETTLE_SECONDS = 45  # every rate needs two scrapes after its counter appeared (1 s apart)


@contextmanager
def running(commands: list[tuple[list[str], dict[str, str] | None]], log: Path) -> Iterator[None]:
    """The processes, stopped (SIGTERM, then SIGKILL) whatever happens."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as out:
            for command, env in commands:
                processes.append(
                    subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=ROOT)
                )
        yield
    finally:
        stop_all(processes)


async def until(check: Callable[[], Awaitable[bool]], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {what} within 30 s:\n{tail(log)}")


def prometheus_config(gateway: int, *workers: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(observability.RULES_PATH)],
        "scrape_configs": [
            {
                "job_name": "billing-gateway",
                "static_configs": [{"targets": [f"127.0.0.1:{gateway}"]}],
            },
            {
                "job_name": "billing-workers",
                "static_configs": [{"targets": [f"127.0.0.1:{w}" for w in workers]}],
            },
        ],
    }


def poison_webhook() -> tuple[bytes, dict[str, str]]:
    """A real subscription event whose price is in no catalog: the worker dead-letters it."""
    event = load_event(SYNCENGINE_CREATED)
    # Another customer and subscription: not a stale snapshot of the good event's.
    event["data"]["object"]["customer"] = f"cus_poison_{uuid.uuid4().hex[:12]}"
    event["data"]["object"]["id"] = f"sub_poison_{uuid.uuid4().hex[:12]}"
    text = json.dumps(event).replace(SYNCENGINE_PRICE, f"price_poison_{uuid.uuid4().hex[:12]}")
    return signed(json.loads(text))


def expressions() -> dict[str, bool]:
    """Every expression to evaluate, and whether it must have series here: every panel and
    every alert's signal does; an alert's whole expression only when its condition holds."""
    wanted = {expr: True for panel in observability.PANELS for expr, _ in panel.exprs}
    for alert in observability.ALERTS:
        wanted[alert.signal] = True
        wanted[alert.expr] = False  # parses; the dead-letters one is checked below
    return wanted


async def test_every_panel_and_alert_expression_has_series_and_a_poison_fires_dead_letters(
    settings: FleetSettings, create_database: Any, tmp_path: Path
) -> None:
    prometheus = require("prometheus")
    assert settings.kafka_bootstrap_servers
    url = await create_database(migrated=True)
    settings = settings.model_copy(update={"database_url": url})
    await create_topics(settings)
    gateway_port, worker_port, prometheus_port = free_port(), free_port(), free_port()
    notify_port, closed_port = free_port(), free_port()
    connection = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "DATABASE_URL": url}
    gateway_env = clean_env(
        **connection,
        BILLING_STRIPE_WEBHOOK_SECRETS=PRIMARY_SECRET,
        BILLING_GATEWAY_PORT=str(gateway_port),
        BILLING_JWT_HS256_SECRET=HS256_SECRET,
        BILLING_JWT_ISSUER=ISSUER,
        BILLING_JWT_AUDIENCE=AUDIENCE,
    )
    worker_env = clean_env(
        **connection,
        BILLING_ENTITLEMENT_CATALOG_PATH=str(write_catalog(tmp_path / "catalog.yaml")),
        BILLING_WORKER_HTTP_PORT=str(worker_port),
        BILLING_WORKER_SESSION_TIMEOUT_MS="1000",
        BILLING_WORKER_MAX_ATTEMPTS="2",
        BILLING_WORKER_RETRY_BACKOFF_SECONDS="0.1",
    )
    notify_env = {
        **worker_env,
        "BILLING_WORKER_HTTP_PORT": str(notify_port),
        "BILLING_WORKER_DECLARATION": "tests.observability.deliveries_worker:DECLARATION",
        # Nobody listens there: each delivery is retried and stays pending.
        "OBS_DELIVERY_URL": f"http://127.0.0.1:{closed_port}/hook",
        "PYTHONPATH": str(ROOT),
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(gateway_port, worker_port, notify_port)))
    log = tmp_path / "processes.log"
    commands: list[tuple[list[str], dict[str, str] | None]] = [
        (GATEWAY, gateway_env),
        ([*COMMAND, "worker", "entitlement"], worker_env),
        ([*COMMAND, "worker", "notify"], notify_env),
        (
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            None,
        ),
    ]
    gateway = f"http://127.0.0.1:{gateway_port}"
    api = f"http://127.0.0.1:{prometheus_port}/api/v1"
    with running(commands, log):
        async with httpx.AsyncClient(timeout=5) as client:

            def ok(address: str) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return (await client.get(address)).status_code == 200

                return check

            # Each /readyz sets billing_dependency_up: its alert's signal has series after.
            await until(ok(f"{gateway}/readyz"), "ready gateway", log)
            for port in (worker_port, notify_port):
                await until(ok(f"http://127.0.0.1:{port}/readyz"), f"ready worker on {port}", log)
            await until(ok(f"http://127.0.0.1:{prometheus_port}/-/ready"), "Prometheus", log)

            webhook = f"{gateway}/webhooks/stripe"
            body, headers = signed(load_event(SYNCENGINE_CREATED))
            assert (await client.post(webhook, content=body, headers=headers)).status_code == 200
            body, headers = poison_webhook()
            assert (await client.post(webhook, content=body, headers=headers)).status_code == 200
            body, headers = signed(load_event(SYNCENGINE_CREATED), secret="whsec_wrong")
            assert (await client.post(webhook, content=body, headers=headers)).status_code == 400
            # The read API refuses a request without a token: its latency is recorded.
            assert (await client.get(f"{gateway}/v1/entitlements")).status_code == 401

            async def query(expr: str) -> list[Any]:
                response = await client.get(f"{api}/query", params={"query": expr})
                assert response.status_code == 200, (expr, response.text)
                result: list[Any] = response.json()["data"]["result"]
                return result

            wanted = expressions()
            missing = [expr for expr, needs in wanted.items() if needs]
            dead_letters = next(
                a for a in observability.ALERTS if a.name == "BillingDeadLettersGrowing"
            )
            deadline = time.monotonic() + SETTLE_SECONDS
            fired: list[Any] = []
            while (missing or not fired) and time.monotonic() < deadline:
                missing = [expr for expr in missing if not await query(expr)]
                fired = await query(dead_letters.expr)
                await asyncio.sleep(1)
            for expr in wanted:
                await query(expr)  # every one parses (a 400 would fail here)
            dependencies = await query("billing_dependency_up")
            scrapes = [
                (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                for port in (gateway_port, worker_port, notify_port)
            ]

    # Prometheus naming (units, _total, no reserved suffixes), as promtool lints it.
    for text in scrapes:
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    assert missing == [], "\n".join([*missing, tail(log)])
    assert [series["metric"]["worker"] for series in fired] == ["entitlement"]
    # Every process was ready: each reached both dependencies its /readyz checks.
    assert sorted(
        (s["metric"]["job"], s["metric"]["dependency"], s["value"][1]) for s in dependencies
    ) == sorted(
        (job, dependency, "1")
        for job in ("billing-gateway", "billing-workers", "billing-workers")
        for dependency in ("database", "kafka")
    )
