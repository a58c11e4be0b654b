"""A toy worker whose effect is an outbound webhook: one HTTP delivery per event."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from contracts import BillingEvent
from tests.deliveries_support import http_channel
from workers.runtime.deliveries.model import Delivery
from workers.runtime.spec import Effect, WorkerSpec


def webhook_spec(name: str, topic: str, url: str) -> WorkerSpec:
    async def handle(conn: asyncpg.Connection, event: BillingEvent) -> Sequence[Effect]:
        body = {"type": event.type, "stripe_event_id": event.source.stripe_event_id}
        return [Delivery.json("http", url, f"{name}-{event.id}", body)]

    return WorkerSpec.single(name, handle, topic=topic, channels={"http": http_channel()})
