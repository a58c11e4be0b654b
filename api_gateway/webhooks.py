"""``POST /webhooks/stripe``: verify, normalize, publish; 2xx only after the broker's ack."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic_core import from_json
from starlette.requests import ClientDisconnect

from api_gateway.metrics import (
    API_VERSION_MISMATCHES,
    IN_FLIGHT,
    SIGNATURE_FAILURES,
    STRIPE_API_VERSIONS,
    STRIPE_EVENT_TYPES,
    WEBHOOKS_RECEIVED,
)
from api_gateway.normalize import UnhandledEventType, UnmappableEvent, normalize, partition_key
from api_gateway.problems import problem
from api_gateway.publisher import EventPublisher, PublishFailed
from api_gateway.settings import GatewaySettings
from api_gateway.signature import InvalidSignature, verify_signature
from contracts import cloudevent_headers
from contracts.labels import bounded_label, log_value

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

WEBHOOK_PATH = "/webhooks/stripe"
CE_SOURCE = "/billing-fleet/stripe"
RETRY_AFTER_SECONDS = "5"


def _as_stripe_event(body: bytes) -> dict[str, Any] | None:
    """The decoded event, or None when the body is not JSON of a Stripe event."""
    try:
        data = from_json(body)  # pydantic-core's parser: twice stdlib json's speed
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("object", "event") != "event":
        return None
    if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
        return None
    return data if isinstance(data.get("data"), dict) else None


def _trace_id(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


@router.post(
    WEBHOOK_PATH,
    summary="Receive a signed Stripe webhook event",
    responses={
        200: {"description": "Published to billing.events.v1, or ignored (unhandled type)."},
        400: {"description": "Bad or missing signature, stale timestamp, or not a Stripe event."},
        408: {"description": "Body not received within the configured time."},
        413: {"description": "Body over the configured limit."},
        422: {"description": "A handled event type whose object cannot be normalized."},
        503: {"description": "The broker did not acknowledge; Stripe will retry."},
    },
)
async def receive_stripe_webhook(request: Request) -> Response:
    IN_FLIGHT.inc()
    try:
        return await _handle(request, request.app.state.settings, request.app.state.publisher)
    finally:
        IN_FLIGHT.dec()


async def _handle(
    request: Request, settings: GatewaySettings, publisher: EventPublisher
) -> Response:
    try:
        # The edge (api_gateway.guard) refuses a body over the limit, by Content-Length or
        # while it streams, with 413 (counted as too_large) before or instead of this.
        body = await request.body()
    except ClientDisconnect:
        # The body never came whole: the server answered 408 at its deadline and closed
        # (billing_fleet.http_server), or the client left. Nobody reads an answer now.
        WEBHOOKS_RECEIVED.labels("unknown", "incomplete").inc()
        log.info("webhook body incomplete", extra={"outcome": "incomplete"})
        return problem(408, "Request body not received in full.")

    try:
        verify_signature(
            body,
            request.headers.get("stripe-signature"),
            [s.get_secret_value() for s in settings.stripe_webhook_secrets],
            settings.stripe_webhook_tolerance_seconds,
        )
    except InvalidSignature as exc:
        SIGNATURE_FAILURES.labels(exc.reason).inc()
        WEBHOOKS_RECEIVED.labels("unknown", "invalid_signature").inc()
        return problem(400, str(exc), reason=exc.reason)

    stripe_event = _as_stripe_event(body)
    if stripe_event is None:
        WEBHOOKS_RECEIVED.labels("unknown", "malformed").inc()
        return problem(400, "Body is not the JSON of a Stripe event.")
    stripe_type: str = stripe_event["type"]
    # The body names the type: only a known one becomes a series (``contracts.labels``).
    type_label = bounded_label(stripe_type, STRIPE_EVENT_TYPES)
    traceparent = request.headers.get("traceparent")
    context = {
        "stripe_event_id": log_value(stripe_event["id"]),
        "stripe_event_type": log_value(stripe_type),
        "trace_id": _trace_id(traceparent),
    }

    try:
        event = normalize(stripe_event)
    except UnhandledEventType:
        WEBHOOKS_RECEIVED.labels(type_label, "ignored").inc()
        log.info("webhook ignored", extra={**context, "outcome": "ignored"})
        return JSONResponse({"received": True, "ignored": True})
    except UnmappableEvent as exc:
        WEBHOOKS_RECEIVED.labels(type_label, "unmappable").inc()
        log.warning(
            "webhook unmappable", extra={**context, "outcome": "unmappable", "error": str(exc)}
        )
        return problem(422, f"Cannot normalize {stripe_type}: {exc}")

    api_version = event.source.api_version
    if api_version and api_version != settings.stripe_api_version:
        # The real value stays on the published event (source.api_version).
        API_VERSION_MISMATCHES.labels(bounded_label(api_version, STRIPE_API_VERSIONS)).inc()

    try:
        await publisher.publish(
            event.model_dump_json().encode(),
            key=partition_key(event),
            headers=cloudevent_headers(event, source=CE_SOURCE, traceparent=traceparent),
        )
    except PublishFailed as exc:
        WEBHOOKS_RECEIVED.labels(type_label, "unavailable").inc()
        log.error(
            "webhook not published", extra={**context, "outcome": "unavailable", "error": str(exc)}
        )
        return problem(
            503,
            "Event broker unavailable; retry later.",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    WEBHOOKS_RECEIVED.labels(type_label, "published").inc()
    # DEBUG: the published event is the durable record of a success (and INFO here costs
    # ~9% of the ingress's CPU); every other outcome is logged at INFO or above.
    log.debug("webhook published", extra={**context, "outcome": "published", "type": event.type})
    return JSONResponse({"received": True, "id": str(event.id), "type": event.type})
