"""The channel protocol: how the dispatcher sends a delivery and learns what came of it."""

from __future__ import annotations

from typing import Protocol

from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult


class Sender(Protocol):
    """One channel (an HTTP client, an SMTP connection pool).

    ``send`` classifies its own failures: the destination's outage is ``retry``, a
    refusal that will not change is ``failed``; it should not raise for either (an
    exception is recorded as ``retry``). The dispatcher bounds each call by the channel's
    ``timeout_seconds`` as well.
    """

    @property
    def policy(self) -> RetryPolicy: ...

    @property
    def timeout_seconds(self) -> float: ...

    async def send(self, delivery: Delivery) -> SendResult: ...

    async def aclose(self) -> None: ...
