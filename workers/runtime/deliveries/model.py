"""The values a handler returns and a channel sender answers."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic_core import to_json

MAX_KEY_CHARS: Final = 255
"""Longest idempotency key, channel or destination name (an index row)."""
MAX_DESTINATION_CHARS: Final = 2048
DETAIL_CHARS: Final = 500
"""Error text kept per attempt (a receiver's message may be long)."""
# RFC 9110 token characters: what a header name may be made of.
_TOKEN: Final = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)

SendOutcome = Literal["sent", "retry", "failed"]
Status = Literal["pending", "sent", "failed", "dead"]
STATUSES: Final[tuple[Status, ...]] = ("pending", "sent", "failed", "dead")


class InvalidDelivery(ValueError):
    """A handler built a delivery the table cannot hold (the worker's bug: poison)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One effect to send once through ``channel`` to ``destination``.

    ``idempotency_key`` is unique per (worker, channel): a redelivered event that builds
    the same delivery creates no second row, and senders hand it to the receiver (e.g.
    the ``webhook-id`` header) so it can drop a copy sent again after a crash.
    """

    channel: str
    destination: str
    idempotency_key: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Anything the sender needs besides the payload (e.g. a mail's subject); JSON."""

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("channel", self.channel, MAX_KEY_CHARS),
            ("idempotency_key", self.idempotency_key, MAX_KEY_CHARS),
            ("destination", self.destination, MAX_DESTINATION_CHARS),
        ):
            if not value or len(value) > limit or "\x00" in value:
                raise InvalidDelivery(f"{name} must be 1 to {limit} characters without NUL")
        for header, value in self.headers.items():
            # httpx refuses these at send time, which would look like the receiver's outage.
            if not isinstance(header, str) or not header or not set(header) <= _TOKEN:
                raise InvalidDelivery(f"header name {header!r} is not an HTTP token")
            if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
                raise InvalidDelivery(f"header {header} must be text without CR, LF or NUL")

    @classmethod
    def json(
        cls,
        channel: str,
        destination: str,
        idempotency_key: str,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Delivery:
        """A delivery whose payload is ``body`` as JSON (content-type set unless given)."""
        merged = {"content-type": "application/json", **(headers or {})}
        return cls(channel, destination, idempotency_key, to_json(body), merged, metadata or {})


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt came to, as the channel classifies it.

    ``retry`` is the destination's outage (try the row again later, ``retry_after``
    seconds at the earliest when the receiver said so); ``failed`` is permanent.
    """

    outcome: SendOutcome
    code: str | None = None
    """The HTTP status or SMTP reply code."""
    detail: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A channel's schedule: waits between attempts (the last repeats) and how many
    attempts a row gets before it is dead."""

    backoff_seconds: tuple[float, ...]
    max_attempts: int

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or any(wait < 0 for wait in self.backoff_seconds):
            raise ValueError("max_attempts must be at least 1 and waits not negative")
