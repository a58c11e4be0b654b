"""Prometheus metrics of the ingress (names carry units and ``_total``), and the known
values of the labels that come from request bodies (``contracts.labels``)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram
from stripe.params import WebhookEndpointCreateParams

from api_gateway.normalize import HANDLED_TYPES


def _string_literals(annotation: object) -> frozenset[str]:
    """The strings of every ``Literal`` inside a type (through NotRequired, List, …)."""
    found: set[str] = set()
    for arg in get_args(annotation):
        if isinstance(arg, str):
            found.add(arg)
        else:
            found |= _string_literals(arg)
    return frozenset(found)


# stripe-python's lists of what a webhook endpoint can be created with (generated from
# Stripe's OpenAPI spec): every event type and API version, growing with the SDK.
_ENDPOINT_PARAMS = WebhookEndpointCreateParams.__annotations__
STRIPE_EVENT_TYPES: frozenset[str] = (
    _string_literals(_ENDPOINT_PARAMS["enabled_events"]) - {"*"}
) | HANDLED_TYPES
STRIPE_API_VERSIONS: frozenset[str] = _string_literals(_ENDPOINT_PARAMS["api_version"])

WEBHOOKS_RECEIVED = Counter(
    "billing_webhooks_received_total",
    "Stripe webhook deliveries by Stripe event type (other: not a type stripe-python "
    "knows; unknown: not read) and outcome.",
    ["type", "outcome"],
)
SIGNATURE_FAILURES = Counter(
    "billing_webhook_signature_failures_total",
    "Deliveries refused for their Stripe-Signature, by reason.",
    ["reason"],
)
API_VERSION_MISMATCHES = Counter(
    "billing_webhook_api_version_mismatches_total",
    "Events rendered with another API version than the pinned one (other: not a "
    "version stripe-python knows).",
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
