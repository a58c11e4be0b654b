"""Stripe-Signature verification over the raw body, with several secrets for rolling.

The HMAC check itself is stripe-python's (constant-time, any of several ``v1``
signatures may match); this module adds secret rotation, a bound on timestamps from
the future (stripe-python checks only the past) and one typed error with a reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import stripe

Reason = Literal["missing", "malformed", "mismatch", "stale", "future"]


class InvalidSignature(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason


def _timestamp(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "t":
            return int(value)
    raise ValueError("no timestamp")


def verify_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    tolerance_seconds: int,
    now: float | None = None,
) -> None:
    """Return if any secret signed ``payload`` within the tolerance, else raise InvalidSignature."""
    if not header:
        raise InvalidSignature("missing", "Missing Stripe-Signature header.")
    if not secrets:
        raise InvalidSignature("mismatch", "No webhook signing secret is configured.")
    try:
        text = payload.decode("utf-8")
        timestamp = _timestamp(header)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidSignature("malformed", "Unreadable Stripe-Signature or body.") from exc

    stale = False
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance_seconds)
        except stripe.SignatureVerificationError as exc:
            message = str(exc)
            if "tolerance" in message:
                stale = True  # the signature matched this secret, the timestamp is too old
            elif "Unable to extract" in message or "expected scheme" in message:
                raise InvalidSignature("malformed", "Malformed Stripe-Signature header.") from exc
            continue
        if timestamp > (now if now is not None else time.time()) + tolerance_seconds:
            raise InvalidSignature("future", "Stripe-Signature timestamp is in the future.")
        return
    if stale:
        raise InvalidSignature("stale", "Stripe-Signature timestamp is outside the tolerance.")
    raise InvalidSignature("mismatch", "No signature matches the payload.")
