"""The HTTP channel: POST the payload to the destination URL, one shared client.

The idempotency key goes out as ``webhook-id`` (the Standard Webhooks header), so a
receiver can drop the copy sent again after a crash between sending and recording.
"""

from __future__ import annotations

import email.utils
import time
from typing import Final

import httpx

from workers.runtime.deliveries.model import DETAIL_CHARS, Delivery, RetryPolicy, SendResult
from workers.runtime.settings import RuntimeSettings

ID_HEADER: Final = "webhook-id"
RETRY_AFTER_MAX_SECONDS: Final = 3600.0
"""A receiver's Retry-After beyond this is read as this (a row is not parked for days)."""
# 408 Request Timeout, 425 Too Early and 429 Too Many Requests are the receiver's load,
# not the request's fault; every other 4xx (410 Gone included) will not change.
RETRY_4XX: Final = frozenset({408, 425, 429})


class HttpSender:
    """Sends deliveries as HTTP POSTs through one ``httpx.AsyncClient`` (pooled
    connections, bounded timeouts, redirects not followed)."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        timeout_seconds: float = 10.0,
        max_connections: int = 100,
        user_agent: str = "billing-fleet",
    ) -> None:
        self._policy, self._timeout = policy, timeout_seconds
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            limits=limits,
            follow_redirects=False,
            headers={"user-agent": user_agent},
        )

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    async def send(self, delivery: Delivery) -> SendResult:
        headers = {**delivery.headers, ID_HEADER: delivery.idempotency_key}
        try:
            response = await self._client.post(
                delivery.destination, content=delivery.payload, headers=headers
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return SendResult("failed", detail=_detail(exc))
        except httpx.TransportError as exc:  # refused, reset, timed out: an outage
            return SendResult("retry", detail=_detail(exc))
        return classify(response.status_code, response.headers.get("retry-after"))

    @property
    def closed(self) -> bool:
        return self._client.is_closed

    async def aclose(self) -> None:
        await self._client.aclose()


def classify(status: int, retry_after: str | None = None) -> SendResult:
    """A response's outcome: 2xx sent; 5xx, 408, 425, 429 retried (``Retry-After``
    honoured); anything else (3xx, 410 and other 4xx) failed for good."""
    code = str(status)
    if 200 <= status < 300:
        return SendResult("sent", code)
    if status >= 500 or status in RETRY_4XX:
        return SendResult("retry", code, f"HTTP {status}", parse_retry_after(retry_after))
    return SendResult("failed", code, f"HTTP {status}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), capped;
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)


def _detail(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:DETAIL_CHARS]


def http_sender(settings: RuntimeSettings) -> HttpSender:
    """The HTTP channel as the ``BILLING_DELIVERY_*`` settings configure it."""
    policy = RetryPolicy(
        tuple(settings.delivery_http_backoff_seconds), settings.delivery_http_max_attempts
    )
    return HttpSender(
        policy,
        timeout_seconds=settings.delivery_http_timeout_seconds,
        max_connections=settings.delivery_concurrency,
    )
