"""Prometheus metrics of the ingress (names carry units and ``_total``)."""

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS_RECEIVED = Counter(
    "billing_webhooks_received_total",
    "Stripe webhook deliveries by Stripe event type and outcome.",
    ["type", "outcome"],
)
SIGNATURE_FAILURES = Counter(
    "billing_webhook_signature_failures_total",
    "Deliveries refused for their Stripe-Signature, by reason.",
    ["reason"],
)
API_VERSION_MISMATCHES = Counter(
    "billing_webhook_api_version_mismatches_total",
    "Events rendered with another API version than the pinned one.",
    ["api_version"],
)
PUBLISH_SECONDS = Histogram(
    "billing_webhook_publish_seconds",
    "Time from publish to broker acknowledgement.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
IN_FLIGHT = Gauge(
    "billing_webhooks_in_flight",
    "Webhook requests being handled right now.",
)
