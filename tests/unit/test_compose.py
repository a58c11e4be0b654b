"""compose.yaml runs the whole fleet the way the README says (it cannot run here: no Docker
daemon), and stays in step with the worker registry and the settings classes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from api_gateway.settings import GatewaySettings
from billing_fleet.settings import CoreSettings
from fleet.settings import DevSettings
from workers.registry import WORKERS
from workers.runtime.settings import RuntimeSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
INFRASTRUCTURE = {"kafka", "postgres", "prometheus", "mailpit"}
FLEET_IMAGE = SERVICES["gateway"]["image"]


def fleet_services() -> dict[str, dict[str, Any]]:
    """The services that run the fleet's image (migrate, the gateway, the workers)."""
    return {name: s for name, s in SERVICES.items() if s.get("image") == FLEET_IMAGE}


def worker_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("command", [None])[0] == "worker"}


def pinned(image: str) -> bool:
    """A tag with a version number: not :latest, not bare."""
    _, _, tag = image.rpartition(":")
    return bool(re.match(r"v?\d+\.\d+", tag))


def test_the_services_are_the_infrastructure_migrate_the_gateway_and_every_worker() -> None:
    expected = INFRASTRUCTURE | {"migrate", "gateway"} | {f"worker-{n}" for n in WORKERS}
    assert set(SERVICES) == expected


def test_worker_services_are_exactly_the_registry() -> None:
    commands = {tuple(s["command"]) for s in worker_services().values()}
    assert commands == {("worker", name) for name in WORKERS}
    for name in WORKERS:
        assert SERVICES[f"worker-{name}"]["command"] == ["worker", name]


def test_kafka_is_one_kraft_broker_and_images_are_pinned() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "ZOOKEEPER" not in " ".join(env)
    # Topics come from the workers (with the fleet's partition count), never auto-created.
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    for name in INFRASTRUCTURE:
        assert pinned(SERVICES[name]["image"]), name


def test_the_notification_worker_mails_to_the_mail_catcher() -> None:
    env = SERVICES["worker-notification"]["environment"]
    assert (env["BILLING_NOTIFICATION_SMTP_HOST"], env["BILLING_NOTIFICATION_SMTP_PORT"]) == (
        "mailpit",
        "1025",
    )
    assert "mailpit" in SERVICES["worker-notification"]["depends_on"]


def test_migrate_runs_once_before_the_gateway_and_the_workers() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in fleet_services().items():
        if name != "migrate":
            conditions = service["depends_on"]
            assert conditions["migrate"]["condition"] == "service_completed_successfully", name
            assert conditions["kafka"]["condition"] == "service_healthy", name


def test_the_gateway_starts_after_every_worker_created_its_topics() -> None:
    conditions = SERVICES["gateway"]["depends_on"]
    for name in worker_services():
        assert conditions[name]["condition"] == "service_healthy", name


def test_fleet_services_are_read_only_with_tmpfs_and_healthchecks() -> None:
    assert set(fleet_services()) == {"migrate", "gateway"} | set(worker_services())
    for name, service in fleet_services().items():
        assert service["read_only"] is True, name
        assert {"/tmp", "/data"} <= set(service["tmpfs"]), name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    for name in ("kafka", "postgres", "gateway", *worker_services()):
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD", name


def probe_port(service: dict[str, Any]) -> str:
    match = re.search(r"127\.0\.0\.1:(\d+)/healthz", " ".join(service["healthcheck"]["test"]))
    assert match, service["healthcheck"]
    return match[1]


def test_healthchecks_probe_each_roles_own_port() -> None:
    assert (
        probe_port(SERVICES["gateway"])
        == SERVICES["gateway"]["environment"]["BILLING_GATEWAY_PORT"]
    )
    for name, worker in worker_services().items():
        assert probe_port(worker) == worker["environment"]["BILLING_WORKER_HTTP_PORT"], name


def scrape_targets() -> dict[str, list[str]]:
    config = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    return {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }


def test_prometheus_scrapes_the_gateways_and_each_workers_metrics_port() -> None:
    mounted = " ".join(SERVICES["prometheus"]["volumes"])
    assert "./deploy/compose/prometheus.yml:/etc/prometheus/prometheus.yml" in mounted
    targets = scrape_targets()
    gateway = SERVICES["gateway"]["environment"]
    # /metrics is on the admin port when one is set.
    metrics_port = gateway.get("BILLING_GATEWAY_ADMIN_PORT", gateway["BILLING_GATEWAY_PORT"])
    # Job names carry the prefix the alert rules select the fleet's targets by.
    expected = {"billing-gateway": [f"gateway:{metrics_port}"]}
    for name, worker in worker_services().items():
        port = worker["environment"]["BILLING_WORKER_HTTP_PORT"]
        expected[f"billing-{name}"] = [f"{name}:{port}"]
    assert targets == expected


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:  # Debian's prometheus package, which .ci/run installs
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: CI must run this check (apt-get install prometheus)")
        pytest.skip("promtool is not installed")
    done = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy/compose/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def settings_classes() -> set[type[CoreSettings]]:
    """Every settings class of the fleet: the components' and their subclasses."""
    found: set[type[CoreSettings]] = set()
    pending: list[type[CoreSettings]] = [
        CoreSettings,
        GatewaySettings,
        RuntimeSettings,
        DevSettings,
        *(d.settings for d in WORKERS.values()),
    ]
    while pending:
        cls = pending.pop()
        if cls not in found and not cls.__module__.startswith("tests"):
            found.add(cls)
            pending += cls.__subclasses__()
    return found


def real_variables() -> set[str]:
    names: set[str] = set()
    for cls in settings_classes():
        for field_name, info in cls.model_fields.items():
            names.add(f"BILLING_{field_name.upper()}")
            if isinstance(info.validation_alias, AliasChoices):
                names |= {str(choice) for choice in info.validation_alias.choices}
    return names


def test_every_billing_variable_compose_sets_is_a_real_setting() -> None:
    real = real_variables()
    assert {"BILLING_DATABASE_URL", "BILLING_WORKER_HTTP_PORT"} <= real
    for name, service in fleet_services().items():
        variables = {v for v in service["environment"] if v.startswith("BILLING_")}
        assert variables, name
        assert variables <= real, f"{name}: not settings: {sorted(variables - real)}"
    # The image's own ENV lines name real settings too.
    image_env = re.findall(r"\b(BILLING_[A-Z0-9_]+)=", (ROOT / "Dockerfile").read_text())
    assert image_env
    assert set(image_env) <= real, sorted(set(image_env) - real)
