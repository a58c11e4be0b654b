"""Helm's own lint and render, then every manifest against the Kubernetes schemas."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.chart_support import (
    CHART,
    CRD_KINDS,
    KUBE_VERSIONS,
    SCENARIOS,
    chart,
    manifests,
    render,
)

WARNING = 2  # helm_python.lint's severities: 1 info, 2 warning, 3 error


def test_the_ci_scenarios_exist() -> None:
    assert {"minimal", "production", "everything"} <= set(SCENARIOS)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_strict_is_clean(scenario: str, kube_version: str) -> None:
    report = helm_python.lint(
        CHART, SCENARIOS[scenario], strict=True, kube_version=f"v{kube_version}"
    )
    findings = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert report["total_charts_linted"] == 1
    assert (findings, report["errors"]) == ([], [])


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_manifest_validates(scenario: str, kube_version: str) -> None:
    objects = manifests(SCENARIOS[scenario])
    checked = []
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        # strict: unknown fields are errors too (a typo would otherwise be dropped silently).
        kubernetes_validate.validate(obj, kube_version, strict=True)
        checked.append(obj["kind"])
    assert {"Deployment", "Service", "ConfigMap", "Job", "PodDisruptionBudget"} <= set(checked)


def test_everything_renders_every_template() -> None:
    rendered = render(SCENARIOS["everything"])
    empty = [path for path, text in rendered.items() if not text.strip()]
    assert empty == []
    kinds = {o["kind"] for o in manifests(SCENARIOS["everything"])}
    assert {"HorizontalPodAutoscaler", "Ingress", "Secret", *CRD_KINDS} <= kinds


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"gateway": {"replicas": "two"}}, "replicas"),
        ({"gateway": {"port": 70000}}, "port"),
        ({"workers": {"entitlement": {"hpa": {"enabled": "yes"}}}}, "enabled"),
        ({"config": {"env": {"KAFKA_BOOTSTRAP_SERVERS": "x"}}}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"metrics": {"dashboard": {"enabeld": True}}}, "enabeld"),
        ({"secrets": {"databaseUrl": {"existingSecret": 7}}}, "existingSecret"),
        ({"kafka": {"sasl": {"enabled": True, "mechanism": "OAUTHBEARER"}}}, "mechanism"),
        ({"kafka": {"tls": {"enabled": "yes"}}}, "/kafka/tls/enabled"),
        ({"kafka": {"tls": {"enabled": True, "checkHostname": "no"}}}, "checkHostname"),
        ({"kafka": {"securityProtocol": "TLS"}}, "securityProtocol"),
        ({"kafka": {"tls": {"enabled": True, "caFile": "/ca.pem"}}}, "caFile"),
        # What the kafka and secrets blocks own is not a plain setting.
        ({"config": {"env": {"BILLING_KAFKA_SSL_CAFILE": "/ca.pem"}}}, "BILLING_KAFKA_SSL_CAFILE"),
        ({"config": {"env": {"BILLING_KAFKA_SECURITY_PROTOCOL": "SSL"}}}, "SECURITY_PROTOCOL"),
        ({"config": {"env": {"BILLING_NOTIFICATION_SMTP_PASSWORD": "x"}}}, "SMTP_PASSWORD"),
        ({"secrets": {"notificationWebhookEndpoints": {"value": "x"}}}, "value"),
    ],
)
def test_the_schema_rejects_wrong_values(values: dict[str, Any], named: str) -> None:
    with pytest.raises(helm_python.HelmError, match=named):
        render(values)
    report = helm_python.lint(CHART, values, strict=True)
    assert any(named in str(m["error"]) for m in report["messages"] if m["severity"] >= WARNING)


def test_values_yaml_satisfies_its_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    assert chart().schema == schema


def test_every_value_is_documented() -> None:
    """Each key of values.yaml has a `# --` comment, on itself or on a map it is in."""
    undocumented: list[str] = []
    documented_at: list[int] = []  # indents of the documented maps we are inside
    comment = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            comment = comment or stripped.startswith("# --")
            continue
        documented_at = [i for i in documented_at if i < indent]
        key, _, rest = stripped.partition(":")
        if comment:
            documented_at.append(indent)
        elif not documented_at and rest.strip():  # a leaf nobody documents
            undocumented.append(key)
        comment = False
    assert undocumented == []
