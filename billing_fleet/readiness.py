"""The readiness gauge: which dependency the last /readyz reached, per process."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Gauge

DEPENDENCY_UP = Gauge(
    "billing_dependency_up",
    "1 when the last readiness check reached the dependency, 0 when not.",
    ["dependency"],
)


def record_checks(results: Mapping[str, bool]) -> None:
    """Set the gauge from one /readyz run: dependency name -> reached."""
    for dependency, reached in results.items():
        DEPENDENCY_UP.labels(dependency=dependency).set(1 if reached else 0)
