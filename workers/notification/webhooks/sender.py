"""The signed webhook channel: the runtime's HTTP channel, each attempt signed.

Per attempt: the delivery's endpoint is looked up in the endpoints file by the id its
metadata holds (its secrets are never in the row, so a rotation signs what is already
queued), ``webhook-timestamp`` is now and ``webhook-signature`` holds one ``v1,<sig>`` per
secret; ``webhook-id`` is the delivery's idempotency key (set by ``HttpSender``, which also
POSTs, classifies the answer and reads ``Retry-After``). A 410 Gone disables the endpoint
in ``webhook_endpoints`` and stops its pending rows; a row of a disabled endpoint fails
without a request. Each endpoint's newest success and failure are written about once a
second, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol, TypeVar

import asyncpg

from billing_fleet.db import bounded_connection, close_pool, create_pool
from workers.notification.webhooks import CHANNEL
from workers.notification.webhooks.endpoints import EndpointsFile
from workers.notification.webhooks.health import HealthBuffer
from workers.notification.webhooks.payload import ENDPOINT_KEY
from workers.notification.webhooks.signing import signed_headers
from workers.notification.webhooks.state import (
    DISABLED_CODE,
    disable,
    disabled_ids,
    is_disabled,
    record_health,
)
from workers.runtime.deliveries.http import HttpSender
from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult

log = logging.getLogger(__name__)
T = TypeVar("T")

GONE: Final = "410"
HEALTH_WRITE_SECONDS: Final = 1.0
"""Longest an endpoint's newest outcome waits in memory before it is written."""
DISABLED_READ_SECONDS: Final = 5.0
"""How often the endpoints other replicas disabled are read (sends to them are skipped)."""
POOL_SIZE: Final = 2
"""The sender's own connections: a disable (or a check) and the background writes."""


class SignedWebhookSender:
    """``Sender`` of the ``webhook`` channel: ``http`` signs nothing, this does."""

    def __init__(
        self,
        endpoints: EndpointsFile,
        http: HttpSender,
        database_url: str | None,
        *,
        worker: str,
        db_timeout: float,
        channel: str = CHANNEL,
    ) -> None:
        self._endpoints, self._http = endpoints, http
        self._database_url, self._db_timeout = database_url, db_timeout
        self._worker, self._channel = worker, channel
        self._disabled: set[str] = set()  # known disabled here; checked before failing
        self._health = HealthBuffer()
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._keeper: asyncio.Task[None] | None = None

    @property
    def policy(self) -> RetryPolicy:
        return self._http.policy

    @property
    def timeout_seconds(self) -> float:
        # The POST, and at most two reads or writes of the endpoint's state around it.
        return self._http.timeout_seconds + 2 * self._db_timeout

    async def send(self, delivery: Delivery) -> SendResult:
        self._start_keeper()
        endpoint_id = delivery.metadata.get(ENDPOINT_KEY)
        endpoint = self._endpoints.get(endpoint_id) if isinstance(endpoint_id, str) else None
        if endpoint is None:
            return SendResult("failed", detail=f"endpoint {endpoint_id!r} is not in the file")
        if not endpoint.enabled:
            return SendResult("failed", detail=f"endpoint {endpoint.id} is off (enabled: false)")
        if endpoint.id in self._disabled:
            try:
                still = await self._with_db(lambda conn: is_disabled(conn, endpoint.id))
            except Exception as exc:  # PostgreSQL's outage: try again later
                return SendResult("retry", detail=f"endpoint state not read: {exc!r}"[:500])
            if still:
                return SendResult(
                    "failed",
                    DISABLED_CODE,
                    f"endpoint {endpoint.id} is disabled (HTTP 410 Gone): "
                    f"`billing-fleet webhooks enable {endpoint.id}` re-queues it",
                )
            self._disabled.discard(endpoint.id)  # enabled again meanwhile
        try:
            body = delivery.payload.decode()
        except UnicodeDecodeError:
            return SendResult("failed", detail="the payload is not UTF-8 text")
        at = datetime.now(UTC)
        signed = {
            **delivery.headers,
            **signed_headers(endpoint.secret_values(), delivery.idempotency_key, at, body),
        }
        # To the file's URL now: an endpoint moved in the file takes its queued rows along.
        sent = dataclasses.replace(delivery, destination=endpoint.url, headers=signed)
        result = await self._http.send(sent)
        self._health.note(endpoint.id, result, at)
        if result.code == GONE:
            await self._disable(endpoint.id, delivery.idempotency_key)
        return result

    async def aclose(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        if self._health:
            with contextlib.suppress(Exception):  # best effort at shutdown, bounded
                await self._write_health()
        if self._pool is not None:
            await close_pool(self._pool, self._db_timeout)
            self._pool = None
        await self._http.aclose()

    async def _disable(self, endpoint_id: str, key: str) -> None:
        self._disabled.add(endpoint_id)
        reason = f"HTTP 410 Gone to {key}"
        try:
            stopped = await self._with_db(
                lambda conn: disable(
                    conn,
                    endpoint_id,
                    reason,
                    worker=self._worker,
                    channel=self._channel,
                    answered=key,
                )
            )
        except Exception as exc:  # its next 410 tries again
            log.error(
                "webhook endpoint answered 410 but was not disabled",
                extra={"endpoint": endpoint_id, "error": repr(exc)},
            )
            return
        log.warning(
            "webhook endpoint disabled: it answered 410 Gone",
            extra={"endpoint": endpoint_id, "stopped_deliveries": stopped},
        )

    async def _with_db(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = await self._get_pool()
        async with bounded_connection(pool, self._db_timeout) as conn:
            return await work(conn)

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                if not self._database_url:  # ``billing-fleet worker`` does not start without
                    raise RuntimeError("signed webhooks need DATABASE_URL (endpoint state)")
                # No connection yet (min_size 0): opened, bounded, when one is acquired.
                self._pool = await create_pool(
                    self._database_url,
                    min_size=0,
                    max_size=POOL_SIZE,
                    connect_timeout=self._db_timeout,
                )
            return self._pool

    def _start_keeper(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep(), name=f"{self._worker}-webhooks")

    async def _keep(self) -> None:
        """Write the endpoints' health and read the disabled ones, until cancelled."""
        loop = asyncio.get_running_loop()
        read_at = loop.time()
        while True:
            await asyncio.sleep(HEALTH_WRITE_SECONDS)
            try:
                await self._write_health()
                if loop.time() >= read_at:
                    read_at = loop.time() + DISABLED_READ_SECONDS
                    self._disabled |= await self._with_db(disabled_ids)
            except Exception as exc:  # PostgreSQL out: kept, written next round
                log.warning("webhook endpoint state not written", extra={"error": repr(exc)})

    async def _write_health(self) -> None:
        if not self._health:
            return
        health = self._health.take()
        try:
            await self._with_db(lambda conn: record_health(conn, health))
        except BaseException:
            self._health.keep(health)
            raise


class WebhookSettings(Protocol):
    """What ``webhook_sender`` reads (the runtime's and the notification worker's)."""

    @property
    def database_url(self) -> str | None: ...
    @property
    def worker_database_timeout_seconds(self) -> float: ...
    @property
    def delivery_concurrency(self) -> int: ...
    @property
    def delivery_http_timeout_seconds(self) -> float: ...
    @property
    def delivery_lease_seconds(self) -> float: ...
    @property
    def notification_webhook_endpoints_path(self) -> Path | None: ...
    @property
    def notification_webhook_backoff_seconds(self) -> list[float]: ...


def webhook_policy(backoff_seconds: list[float]) -> RetryPolicy:
    """The first attempt at once, then one per wait: the last wait's failure is dead."""
    return RetryPolicy(tuple(backoff_seconds), len(backoff_seconds) + 1)


def webhook_sender(
    settings: WebhookSettings, endpoints: EndpointsFile, *, worker: str
) -> SignedWebhookSender:
    """The ``webhook`` channel as the settings configure it, over ``endpoints`` (the file
    the worker's handler chooses endpoints from)."""
    db_timeout = settings.worker_database_timeout_seconds
    longest = settings.delivery_http_timeout_seconds + 2 * db_timeout  # timeout_seconds
    if settings.delivery_lease_seconds <= longest:
        raise ValueError(
            "BILLING_DELIVERY_LEASE_SECONDS must be longer than a signed webhook's send: "
            "BILLING_DELIVERY_HTTP_TIMEOUT_SECONDS plus twice "
            f"BILLING_WORKER_DATABASE_TIMEOUT_SECONDS ({longest:g} s)"
        )
    http = HttpSender(
        webhook_policy(settings.notification_webhook_backoff_seconds),
        timeout_seconds=settings.delivery_http_timeout_seconds,
        max_connections=settings.delivery_concurrency,
    )
    return SignedWebhookSender(
        endpoints, http, settings.database_url, worker=worker, db_timeout=db_timeout
    )
