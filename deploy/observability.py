"""The fleet's Prometheus rules and Grafana dashboard, each expression written once here.

``python3 -m deploy.observability`` writes ``charts/billing-fleet/files/rules.yaml`` and
``charts/billing-fleet/files/dashboard.json``; tests/observability checks both files equal
what this module renders, runs promtool on the rules and evaluates every expression
against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FILES = Path(__file__).resolve().parents[1] / "charts" / "billing-fleet" / "files"
RULES_PATH = FILES / "rules.yaml"
DASHBOARD_PATH = FILES / "dashboard.json"

WEBHOOK_ROUTE = "/webhooks/stripe"
HTTP = "billing_http_request_seconds"


@dataclass(frozen=True)
class Record:
    """A recording rule: ``name`` is stored from ``expr`` every evaluation."""

    name: str
    expr: str


# What panels and alerts read more than once; rates over 5m (a few scrapes at 15-30s).
RECORDS: tuple[Record, ...] = (
    Record(
        "billing:webhooks_received:rate5m",
        "sum by (type, outcome) (rate(billing_webhooks_received_total[5m]))",
    ),
    Record(
        "billing:webhook_signature_failures:rate5m",
        "sum by (reason) (rate(billing_webhook_signature_failures_total[5m]))",
    ),
    Record(
        "billing:http_requests:rate5m",
        f"sum by (route, status) (rate({HTTP}_count[5m]))",
    ),
    Record(
        "billing:http_request_seconds_bucket:rate5m",
        f"sum by (route, le) (rate({HTTP}_bucket[5m]))",
    ),
    Record(
        "billing:events_handled:rate5m",
        "sum by (worker, outcome) (rate(billing_events_handled_total[5m]))",
    ),
    Record(
        "billing:handler_seconds_bucket:rate5m",
        "sum by (worker, le) (rate(billing_handler_seconds_bucket[5m]))",
    ),
    Record("billing:consumer_lag:sum", "sum by (worker) (billing_consumer_lag)"),
    # A worker's counter appears at its first dead letter (no 0 before it): a series
    # new in the window counts its whole value, else increase() would miss that letter.
    Record(
        "billing:dead_letters:increase10m",
        "sum by (worker) ((billing_dead_letters_total unless billing_dead_letters_total"
        " offset 10m) or increase(billing_dead_letters_total[10m]))",
    ),
    Record(
        "billing:deliveries:rate5m",
        "sum by (worker, channel, outcome) (rate(billing_deliveries_total[5m]))",
    ),
)

_5XX_RATIO = (
    f'(sum(rate({HTTP}_count{{status=~"5.."}}[5m])) or vector(0)) / sum(rate({HTTP}_count[5m]))'
)

# As with dead letters, the first dead delivery of a channel starts its series at 1.
_DEAD = 'billing_deliveries_total{outcome="dead"}'


@dataclass(frozen=True)
class Alert:
    """``signal`` is what is measured (it has series whenever the fleet runs);
    the rule fires on ``signal condition`` held for ``for_``."""

    name: str
    signal: str
    condition: str
    for_: str
    severity: str
    summary: str

    @property
    def expr(self) -> str:
        return f"({self.signal}) {self.condition}"


ALERTS: tuple[Alert, ...] = (
    Alert(
        "BillingDeadLettersGrowing",
        "billing:dead_letters:increase10m",
        "> 0",
        "0m",
        "warning",
        "Worker {{ $labels.worker }} dead-lettered {{ $value }} messages in 10 minutes.",
    ),
    Alert(
        "BillingConsumerLagHigh",
        "billing:consumer_lag:sum",
        "> 1000",
        "10m",
        "warning",
        "Worker {{ $labels.worker }} is {{ $value }} messages behind for 10 minutes.",
    ),
    Alert(
        "BillingWebhookSignatureFailures",
        "sum(billing:webhook_signature_failures:rate5m)",
        "> 0.1",
        "5m",
        "warning",
        "{{ $value }} webhook deliveries per second refused for their signature.",
    ),
    Alert(
        "BillingGateway5xx",
        _5XX_RATIO,
        "> 0.05",
        "5m",
        "critical",
        "{{ $value | humanizePercentage }} of gateway answers are 5xx.",
    ),
    Alert(
        "BillingOutboxBacklogGrowing",
        "max by (worker) (billing_outbox_backlog)",
        "> 100 and max by (worker) (delta(billing_outbox_backlog[10m])) > 0",
        "10m",
        "warning",
        "Worker {{ $labels.worker }} has {{ $value }} outbox rows unpublished, growing.",
    ),
    Alert(
        "BillingDeliveriesDead",
        f"sum by (worker, channel) (({_DEAD} unless {_DEAD} offset 15m) or increase({_DEAD}[15m]))"
        " or sum by (worker, channel) (0 * billing_deliveries_total)",
        "> 0",
        "0m",
        "warning",
        "{{ $value }} {{ $labels.channel }} deliveries ran out of attempts.",
    ),
    Alert(
        "BillingDeliveriesPending",
        "sum by (worker, channel) (billing_deliveries_pending)",
        "> 0",
        "30m",
        "warning",
        "{{ $value }} {{ $labels.channel }} deliveries pending for 30 minutes.",
    ),
    Alert(
        "BillingProcessDown",
        'up{job=~"billing.*"}',
        "== 0",
        "2m",
        "critical",
        "{{ $labels.instance }} ({{ $labels.job }}) cannot be scraped.",
    ),
    Alert(
        # Every /readyz run sets billing_dependency_up per dependency it checks; min over
        # a process's series so one gateway or worker with a dependency down fires.
        "BillingDependencyUnreachable",
        "min by (job, instance, dependency) (billing_dependency_up)",
        "== 0",
        "3m",
        "critical",
        "{{ $labels.instance }} ({{ $labels.job }}) cannot reach {{ $labels.dependency }}.",
    ),
)


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (expression, legend)
    unit: str


def _quantile(q: float, buckets: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) ({buckets}))"


_WEBHOOK_BUCKETS = f'billing:http_request_seconds_bucket:rate5m{{route="{WEBHOOK_ROUTE}"}}'
# The read API: its routes are the entitlement views.
_READ_ROUTES = ".*/entitlements.*"
_READ_BUCKETS = f'billing:http_request_seconds_bucket:rate5m{{route=~"{_READ_ROUTES}"}}'
_HANDLER_BUCKETS = "billing:handler_seconds_bucket:rate5m"

PANELS: tuple[Panel, ...] = (
    Panel(
        "Webhooks by type and outcome",
        (("billing:webhooks_received:rate5m", "{{type}} {{outcome}}"),),
        "reqps",
    ),
    Panel(
        "Webhook signature failures",
        (("billing:webhook_signature_failures:rate5m", "{{reason}}"),),
        "reqps",
    ),
    Panel(
        "Ingress latency",
        (
            (_quantile(0.5, _WEBHOOK_BUCKETS, "route"), "p50"),
            (_quantile(0.99, _WEBHOOK_BUCKETS, "route"), "p99"),
        ),
        "s",
    ),
    Panel(
        "Read API latency",
        (
            (_quantile(0.5, _READ_BUCKETS, "route"), "p50 {{route}}"),
            (_quantile(0.99, _READ_BUCKETS, "route"), "p99 {{route}}"),
        ),
        "s",
    ),
    Panel(
        "Gateway answers by status",
        (("billing:http_requests:rate5m", "{{route}} {{status}}"),),
        "reqps",
    ),
    Panel(
        "Worker throughput",
        (("billing:events_handled:rate5m", "{{worker}} {{outcome}}"),),
        "ops",
    ),
    Panel(
        "Handler latency",
        (
            (_quantile(0.5, _HANDLER_BUCKETS, "worker"), "p50 {{worker}}"),
            (_quantile(0.99, _HANDLER_BUCKETS, "worker"), "p99 {{worker}}"),
        ),
        "s",
    ),
    Panel("Consumer lag per group", (("billing:consumer_lag:sum", "{{worker}}"),), "short"),
    Panel("Dead letters (10m)", (("billing:dead_letters:increase10m", "{{worker}}"),), "short"),
    Panel(
        "Retries",
        (("sum by (worker, reason) (rate(billing_retries_total[5m]))", "{{worker}} {{reason}}"),),
        "ops",
    ),
    Panel("Outbox backlog", (("max by (worker) (billing_outbox_backlog)", "{{worker}}"),), "short"),
    Panel(
        "Deliveries by channel and outcome",
        (("billing:deliveries:rate5m", "{{worker}} {{channel}} {{outcome}}"),),
        "ops",
    ),
    Panel(
        "Deliveries pending",
        (("sum by (worker, channel) (billing_deliveries_pending)", "{{worker}} {{channel}}"),),
        "short",
    ),
)


def rules() -> dict[str, Any]:
    """The Prometheus rules file (``groups:``), as the PrometheusRule template embeds it."""
    return {
        "groups": [
            {
                "name": "billing-fleet.records",
                "rules": [{"record": r.name, "expr": r.expr} for r in RECORDS],
            },
            {
                "name": "billing-fleet.alerts",
                "rules": [
                    {
                        "alert": a.name,
                        "expr": a.expr,
                        "for": a.for_,
                        "labels": {"severity": a.severity},
                        "annotations": {
                            "summary": a.summary,
                            "runbook": f"README.md#observing ({a.name})",
                        },
                    }
                    for a in ALERTS
                ],
            },
        ]
    }


def dashboard() -> dict[str, Any]:
    """A Grafana dashboard (schema 39) on a ``datasource`` variable, two panels a row."""
    panels: list[dict[str, Any]] = []
    for index, panel in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for n, (expr, legend) in enumerate(panel.exprs)
                ],
            }
        )
    return {
        "uid": "billing-fleet",
        "title": "Billing fleet",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "tags": ["billing-fleet"],
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]
        },
        "panels": panels,
    }


def render_rules() -> str:
    header = "# Generated by `python3 -m deploy.observability`; edit deploy/observability.py.\n"
    return header + yaml.safe_dump(rules(), sort_keys=False, width=1000)


def render_dashboard() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    FILES.mkdir(parents=True, exist_ok=True)
    RULES_PATH.write_text(render_rules())
    DASHBOARD_PATH.write_text(render_dashboard())
    print(f"wrote {RULES_PATH} and {DASHBOARD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
