"""Publishing normalized events to Kafka, acknowledged by the broker before we answer.

What a caller may rely on: ``publish`` returns only after the broker acknowledged the
event (acks=all), so a 2xx means it is on the topic. ``PublishFailed`` (a 503) means no
acknowledgement came within the publish timeout, not that nothing was written: the
request may already be on the wire and land when a stalled broker resumes, or aiokafka
may still retry it. Stripe then redelivers the same event, which normalizes to the same
``id``/``ce_id``; so ``billing.events.v1`` is at-least-once with stable ids, and consumers
keep their effects exactly-once by event id (``processed_events``).

The FastStream broker is connected in the background, once the cluster answers a probe:
the gateway starts (and answers 503) while Kafka is down, and aiokafka reconnects on its
own once connected. The producer's ``request_timeout_ms`` equals our publish timeout, so
aiokafka gives up on a request within the same bound as our answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from faststream.kafka import KafkaBroker

from api_gateway.metrics import PUBLISH_SECONDS
from billing_fleet.kafka_admin import connect_when_reachable
from billing_fleet.kafka_security import kafka_security, servers
from billing_fleet.settings import CoreSettings
from contracts import BILLING_EVENTS, BillingEvent

log = logging.getLogger(__name__)

CONNECT_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
# aiokafka's 16 KiB default holds ~3 Stripe events: concurrent requests then queue for
# the next batch instead of riding along in the current one.
MAX_BATCH_BYTES = 512 * 1024


class PublishFailed(Exception):
    """The broker did not acknowledge in time; the caller answers 503."""


class EventPublisher:
    def __init__(self, settings: CoreSettings) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set")
        self._bootstrap = settings.kafka_bootstrap_servers
        self._timeout = settings.kafka_publish_timeout_seconds
        self._security = kafka_security(settings)
        self.broker = KafkaBroker(
            servers(settings.kafka_bootstrap_servers),
            acks="all",
            enable_idempotence=settings.kafka_enable_idempotence,
            request_timeout_ms=int(self._timeout * 1000),
            max_batch_size=MAX_BATCH_BYTES,
            client_id="billing-fleet-gateway",
            logger=None,
            security=self._security.broker_security(),
        )
        self._publisher = self.broker.publisher(
            BILLING_EVENTS,
            title=BILLING_EVENTS,
            description="One normalized event per Stripe event; key = Stripe customer id.",
            schema=BillingEvent,
        )
        self._connected = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever(), name="kafka-connect")

    async def _connect_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await connect_when_reachable(
                    self.broker, self._bootstrap, self._timeout, security=self._security
                )
            except Exception as exc:
                delay = CONNECT_BACKOFF_SECONDS[min(attempt, len(CONNECT_BACKOFF_SECONDS) - 1)]
                log.warning("kafka unreachable, retrying", extra={"error": str(exc), "in": delay})
                attempt += 1
                await asyncio.sleep(delay)
            else:
                self._connected.set()
                log.info("kafka connected")
                return

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    async def publish(self, value: bytes, *, key: str, headers: dict[str, str]) -> None:
        if not self.connected:
            raise PublishFailed("not connected to Kafka")
        started = time.perf_counter()
        try:
            # The margin lets aiokafka's own request timeout answer first; this bounds the
            # wait whatever it does. asyncio.timeout, not wait_for: no extra task per request.
            async with asyncio.timeout(self._timeout + 1.0):
                await self._publisher.publish(value, key=key.encode(), headers=headers)
        except Exception as exc:
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc
        PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def ping(self, timeout: float) -> bool:
        return self.connected and await self.broker.ping(timeout)

    async def close(self) -> None:
        if self._connector:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        await self.broker.stop()
