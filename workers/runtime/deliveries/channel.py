"""The channel protocol: how the dispatcher sends a delivery and learns what came of it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult


class Sender(Protocol):
    """One channel (an HTTP client, an SMTP connection pool).

    ``send`` classifies its own failures: the destination's outage is ``retry``, a
    refusal that will not change is ``failed``; it should not raise for either (an
    exception is recorded as ``retry``). The dispatcher bounds each call by the channel's
    ``timeout_seconds`` as well. A channel whose sends all go through one server may
    also be a ``Relayed`` sender.
    """

    @property
    def policy(self) -> RetryPolicy: ...

    @property
    def timeout_seconds(self) -> float: ...

    async def send(self, delivery: Delivery) -> SendResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Relayed(Protocol):
    """A sender whose every send goes through one server (an SMTP relay), whatever the
    destination (a recipient): the dispatcher counts its sends per destination against
    ``limit_group`` (e.g. ``smtp://host:port``) instead, and a retry pushes back all the
    rows of the channels through that server. Senders without it (HTTP) count per
    destination: a URL's scheme, host and port, anything else as written.

    A property of the channel, not a function of each destination, so the claim can skip
    a server at its limit by channel (no claiming and giving back rows one by one), and a
    changed relay counts from the next claim on.
    """

    @property
    def limit_group(self) -> str: ...

    @property
    def max_sends(self) -> int:
        """Sends it takes at once (its connections): the server's cap in the dispatcher,
        in place of the per-destination share, so a send never waits for a connection
        inside its own timeout and a relay is sized apart from the HTTP endpoints."""
        ...
