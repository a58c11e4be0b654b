"""Prometheus metrics of deliveries (registered once per process, on import)."""

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "billing_deliveries_total",
    "Delivery attempts by outcome: sent, retry (the destination's outage), failed "
    "(permanent), dead (out of attempts).",
    ["worker", "channel", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "billing_delivery_seconds",
    "Time of one send through a channel, whatever its outcome.",
    ["channel"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DELIVERIES_PENDING = Gauge(
    "billing_deliveries_pending",
    "Deliveries still to send (due or scheduled), as last counted by the dispatcher.",
    ["worker", "channel"],
)
