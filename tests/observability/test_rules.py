"""The rules file and the dashboard: generated from deploy/observability.py, accepted by
promtool, every alert unit-tested both ways, documented, and no expression written twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from deploy import observability
from tests.observability.promtool import promtool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
UNIT_TESTS = HERE / "rules_test.yaml"


def test_the_chart_files_are_what_the_generator_renders() -> None:
    assert observability.RULES_PATH.read_text() == observability.render_rules(), (
        "run python3 -m deploy.observability"
    )
    assert observability.DASHBOARD_PATH.read_text() == observability.render_dashboard()


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(observability.RULES_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(observability.RECORDS) + len(observability.ALERTS)} rules" in (
        result.stdout
    )


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    cases: list[dict[str, Any]] = [
        case
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    names = {alert.name for alert in observability.ALERTS}
    assert fired == names
    assert quiet == names


def test_no_expression_is_written_twice() -> None:
    dashboard = json.loads(observability.DASHBOARD_PATH.read_text())
    rules = yaml.safe_load(observability.RULES_PATH.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert [e for e, n in Counter(exprs).items() if n > 1] == []
    recorded = {r.name for r in observability.RECORDS}
    # Every recording rule feeds a panel or an alert.
    assert {name for name in recorded if not any(name in e for e in exprs)} == set()


def test_the_readme_says_what_to_do_for_each_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    observing = readme.split("\n## Observing\n", 1)[1].split("\n## ", 1)[0]
    assert [a.name for a in observability.ALERTS if f"`{a.name}`" not in observing] == []
