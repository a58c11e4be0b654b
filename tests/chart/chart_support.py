"""The chart as the real Helm engine renders it (helm-python-sdk bundles Helm's Go SDK):
its scenarios, rendered manifests as objects, and the Kubernetes versions it supports."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Final

import helm_python
import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
CHART: Final = ROOT / "charts" / "billing-fleet"
RELEASE: Final = "bf"
NAMESPACE: Final = "billing"

# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS: Final = ("1.27.0", "1.37.0")

# Kinds from the prometheus-operator CRDs: no bundled schema, checked by the tests instead.
CRD_KINDS: Final = frozenset({"ServiceMonitor", "PrometheusRule"})


def scenario_values() -> dict[str, dict[str, Any]]:
    """The chart's defaults and every ``ci/*-values.yaml``, by name."""
    found: dict[str, dict[str, Any]] = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        found[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    return found


SCENARIOS: Final = scenario_values()


@cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text."""
    return chart().render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt is no manifest)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of ``kind`` by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``Kind/name`` -> pod spec of every Deployment and Job."""
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in {"Deployment", "Job"}
    }


def full_name(component: str) -> str:
    return f"{RELEASE}-billing-fleet-{component}"
