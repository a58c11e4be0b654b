"""Prometheus metrics of the workers (names carry units and ``_total``).

One registry per process: in ``billing-fleet dev`` the workers' series appear on the
gateway's ``/metrics``, told apart by the ``worker`` label.
"""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_HANDLED = Counter(
    "billing_events_handled_total",
    "Events a worker finished with, by event type and outcome (applied, duplicate, dead_lettered).",
    ["worker", "type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "billing_handler_seconds",
    "Time to apply one fetched batch, from the first transaction to the offset commit.",
    ["worker"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RETRIES = Counter(
    "billing_retries_total",
    "Retries, by reason: poison (the message failed) or dependency (an outage).",
    ["worker", "reason"],
)
DEAD_LETTERS = Counter(
    "billing_dead_letters_total",
    "Messages written to the dead-letter topic.",
    ["worker"],
)
DUPLICATES_SKIPPED = Counter(
    "billing_duplicates_skipped_total",
    "Redelivered events found in processed_events and skipped.",
    ["worker"],
)
OUTBOX_BACKLOG = Gauge(
    "billing_outbox_backlog",
    "The worker's outbox rows not yet acknowledged by the broker, as last seen by its relay.",
    ["worker"],
)
OUTBOX_PUBLISHED = Counter(
    "billing_outbox_published_total",
    "The worker's outbox rows its relay published (acknowledged, then deleted).",
    ["worker"],
)
CONSUMER_LAG = Gauge(
    "billing_consumer_lag",
    "Messages behind the partition's high watermark after the last batch.",
    ["worker", "topic", "partition"],
)
DLT_REPLAYS = Counter(
    "billing_dlt_replays_total",
    "Dead letters re-published to their origin topic.",
    ["worker"],
)
