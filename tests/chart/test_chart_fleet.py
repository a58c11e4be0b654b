"""What the rendered chart runs: the registry's workers, real settings, hardened pods,
the probes on the ports the processes serve, the catalog, the migrate hook."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import api_gateway.settings
import fleet.settings
import workers.entitlement.settings
import workers.runtime.settings
from billing_fleet.settings import CoreSettings, variables
from tests.chart.chart_support import (
    CHART,
    ROOT,
    SCENARIOS,
    full_name,
    manifests,
    of_kind,
    pod_specs,
)
from workers.entitlement.catalog import parse_catalog
from workers.registry import WORKERS

SETTINGS_MODULES = (
    api_gateway.settings,
    fleet.settings,
    workers.entitlement.settings,
    workers.runtime.settings,
)

HARDENED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def every_settings_class() -> set[type[CoreSettings]]:
    assert SETTINGS_MODULES  # imported so that every component's class is a subclass below
    found: set[type[CoreSettings]] = set()
    todo: list[type[CoreSettings]] = [CoreSettings]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo += cls.__subclasses__()
    return found


def env_names(objects: list[dict[str, Any]]) -> set[str]:
    """Every variable the chart sets: the ConfigMap's keys and each container's env."""
    names = {
        key
        for cm in of_kind(objects, "ConfigMap").values()
        if cm["metadata"]["name"].endswith("-config")
        for key in cm["data"]
    }
    for spec in pod_specs(objects).values():
        names |= {e["name"] for c in spec["containers"] for e in c.get("env", [])}
    return names


def container(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    spec = of_kind(objects, "Deployment")[full_name(deployment)]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return dict(of_kind(objects, "ConfigMap")[full_name("config")]["data"])


def test_workers_map_is_the_registry() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults["workers"]) == set(WORKERS)
    deployments = of_kind(manifests({}), "Deployment")
    assert set(deployments) == {full_name("gateway")} | {full_name(f"worker-{w}") for w in WORKERS}
    for name in WORKERS:
        assert container(manifests({}), f"worker-{name}")["args"] == ["worker", name]


def test_one_template_per_kind_fed_by_the_workers_map() -> None:
    templates = sorted(p.name for p in (CHART / "templates").iterdir())
    assert not [t for t in templates if any(w in t for w in WORKERS)]
    extra = {"queue": {"replicas": 1, "pdb": {"enabled": True}, "hpa": {"enabled": True}}}
    objects = manifests(
        {"workers": {**yaml.safe_load((CHART / "values.yaml").read_text())["workers"], **extra}}
    )
    name = full_name("worker-queue")
    for kind in ("Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Service"):
        assert name in of_kind(objects, kind), kind


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_variable_the_chart_sets_is_a_setting(scenario: str) -> None:
    known = {v for cls in every_settings_class() for v in variables(cls)}
    assert "BILLING_ENTITLEMENT_CATALOG_PATH" in known and "BILLING_GATEWAY_PORT" in known
    unknown = {n for n in env_names(manifests(SCENARIOS[scenario])) if n not in known}
    assert not unknown, unknown


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pod_is_hardened(scenario: str) -> None:
    for where, spec in pod_specs(manifests(SCENARIOS[scenario])).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], where
        for c in spec["containers"]:
            assert HARDENED.items() <= c["securityContext"].items(), where
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], where


def port_of(c: dict[str, Any], name: str) -> int:
    return int(next(p["containerPort"] for p in c["ports"] if p["name"] == name))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_probes_use_the_ports_the_processes_serve(scenario: str) -> None:
    objects = manifests(SCENARIOS[scenario])
    env = config(objects)
    gateway = container(objects, "gateway")
    assert port_of(gateway, "http") == int(env["BILLING_GATEWAY_PORT"])
    assert port_of(gateway, "admin") == int(env["BILLING_GATEWAY_ADMIN_PORT"])
    assert env["BILLING_GATEWAY_PORT"] != env["BILLING_GATEWAY_ADMIN_PORT"]
    assert env["BILLING_GATEWAY_HOST"] == env["BILLING_WORKER_HTTP_HOST"] == "0.0.0.0"
    probes = [(gateway, "http")] + [(container(objects, f"worker-{w}"), "http") for w in WORKERS]
    for c, port in probes:
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    for w in WORKERS:
        assert port_of(container(objects, f"worker-{w}"), "http") == int(
            env["BILLING_WORKER_HTTP_PORT"]
        )
    # Real Kafka answers a fetch as records arrive: no idle fetch every 10 ms (Tansu's).
    assert env["BILLING_WORKER_FETCH_WAIT_MS"] == "500"
    service = of_kind(objects, "Service")[full_name("gateway")]["spec"]["ports"]
    assert {p["targetPort"] for p in service} == {"http", "admin"}
    for ingress in of_kind(objects, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["port"] == {"name": "http"}


def test_the_catalog_is_mounted_and_a_change_rolls_the_worker() -> None:
    chart_copy = (CHART / "files" / "catalog.yaml").read_text()
    assert chart_copy == (ROOT / "catalog.example.yaml").read_text()
    before = manifests({})
    catalog = of_kind(before, "ConfigMap")[full_name("catalog")]["data"]["catalog.yaml"]
    assert yaml.safe_load(catalog) == yaml.safe_load(chart_copy)
    assert parse_catalog(yaml.safe_load(catalog)).products  # the worker would start with it
    worker = container(before, "worker-entitlement")
    path = next(
        e["value"] for e in worker["env"] if e["name"] == "BILLING_ENTITLEMENT_CATALOG_PATH"
    )
    mount = next(m for m in worker["volumeMounts"] if m["name"] == "catalog")
    assert path == f"{mount['mountPath']}/catalog.yaml"

    after = manifests({"catalog": {"content": "version: 1\nproducts: {}\n"}})

    def annotations(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
        found = of_kind(objects, "Deployment")[full_name(deployment)]
        return dict(found["spec"]["template"]["metadata"]["annotations"])

    rolled = annotations(before, "worker-entitlement"), annotations(after, "worker-entitlement")
    assert rolled[0]["checksum/catalog"] != rolled[1]["checksum/catalog"]
    assert annotations(before, "gateway") == annotations(after, "gateway")


def test_migrate_runs_as_a_hook_before_install_and_upgrade() -> None:
    objects = manifests(SCENARIOS["minimal"])
    job = of_kind(objects, "Job")[full_name("migrate")]
    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook["helm.sh/hook-weight"]) == 0
    assert "before-hook-creation" in hook["helm.sh/hook-delete-policy"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["migrate"]
    # The ConfigMap does not exist yet at pre-install: the Job carries its settings itself.
    assert "envFrom" not in c
    names = {e["name"] for e in c["env"]}
    assert {"BILLING_DATABASE_URL", "BILLING_KAFKA_BOOTSTRAP_SERVERS"} <= names
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_no_secret_values_by_default_and_existing_secrets_are_used() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert all(
        s.get("value", "") == "" and s["existingSecret"] == "" for s in defaults["secrets"].values()
    )
    assert of_kind(manifests({}), "Secret") == {}
    objects = manifests(SCENARIOS["production"])
    assert of_kind(objects, "Secret") == {}
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(objects, "gateway")["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "BILLING_DATABASE_URL": {"name": "billing-fleet-db", "key": "url"},
        "BILLING_STRIPE_WEBHOOK_SECRETS": {
            "name": "billing-fleet-stripe",
            "key": "webhook-secrets",
        },
        "BILLING_JWT_HS256_SECRET": {"name": "billing-fleet-jwt", "key": "hs256"},
        "BILLING_KAFKA_SASL_USERNAME": {"name": "billing-fleet-kafka-sasl", "key": "username"},
        "BILLING_KAFKA_SASL_PASSWORD": {"name": "billing-fleet-kafka-sasl", "key": "password"},
    }
    # The worker needs none of the gateway's secrets.
    worker_env = {e["name"] for e in container(objects, "worker-entitlement")["env"]}
    assert "BILLING_STRIPE_WEBHOOK_SECRETS" not in worker_env


def test_the_image_defaults_to_the_app_version() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    for where, spec in pod_specs(manifests({})).items():
        assert [c["image"] for c in spec["containers"]] == [f"billing-fleet:{app_version}"], where


def test_monitoring_parts_are_toggled_and_carry_the_files() -> None:
    assert not {"ServiceMonitor", "PrometheusRule"} & {o["kind"] for o in manifests({})}
    objects = manifests(SCENARIOS["everything"])
    (rule,) = of_kind(objects, "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "rules.yaml").read_text())
    dashboard = of_kind(objects, "ConfigMap")[full_name("dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    assert text == (CHART / "files" / "dashboard.json").read_text().rstrip("\n")
    (monitor,) = of_kind(objects, "ServiceMonitor").values()
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    served = {p["name"] for s in of_kind(objects, "Service").values() for p in s["spec"]["ports"]}
    assert ports <= served
    # Every target's job is billing-<component>: the prefix the alert rules select by.
    for endpoint in monitor["spec"]["endpoints"]:
        [job] = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        assert job["replacement"] == "billing-$1"
        assert job["sourceLabels"] == [
            "__meta_kubernetes_service_label_app_kubernetes_io_component"
        ]
    assert 'job=~"billing.*"' in (CHART / "files" / "rules.yaml").read_text()


def test_an_enabled_hpa_owns_the_replicas() -> None:
    objects = manifests(SCENARIOS["production"])
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {full_name("gateway"), full_name("worker-entitlement")}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert "replicas" not in of_kind(objects, "Deployment")[name]["spec"]
    defaults = of_kind(manifests(SCENARIOS["minimal"]), "Deployment")
    assert defaults[full_name("gateway")]["spec"]["replicas"] == 2


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_ships_a_catalog_the_worker_accepts(scenario: str) -> None:
    objects = manifests(SCENARIOS[scenario])
    text = of_kind(objects, "ConfigMap")[full_name("catalog")]["data"]["catalog.yaml"]
    assert parse_catalog(yaml.safe_load(text), origin=scenario).products
