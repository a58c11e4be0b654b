"""Stripe-Signature verification over the raw body, with several secrets for rolling.

The header is read once, the way stripe-python's ``WebhookSignature`` reads it, and that
one reading serves the HMAC check and both timestamp bounds (stripe-python bounds only the
past; a second, looser reading for the future bound once let
``x, t=<now>,t=<future>,v1=<signature over future>`` through). ``tests/unit/test_signature.py``
holds the verdicts to stripe-python's own on arbitrary headers. This module adds secret
rotation, the bound on timestamps from the future and one typed error with a reason.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from typing import Final, Literal

Reason = Literal["missing", "malformed", "mismatch", "stale", "future"]

SCHEME: Final = "v1"


class InvalidSignature(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason


def parse_header(header: str) -> tuple[int, list[str]]:
    """``(timestamp, v1 signatures)`` exactly as stripe-python reads ``header``.

    Items are split on ``,`` and each on its first two ``=``; keys are compared as they
    are (``" t"`` is not ``t``); the timestamp is the first ``t`` item, read by ``int()``,
    and every ``t`` item must have a value. Raises ValueError where stripe-python cannot
    extract them.
    """
    items = [item.split("=", 2) for item in header.split(",")]
    try:
        # A list, not next(): stripe-python reads every ``t`` item (one without a value
        # is an error even after the first).
        timestamp = int([item[1] for item in items if item[0] == "t"][0])  # noqa: RUF015
        signatures = [item[1] for item in items if item[0] == SCHEME]
    except IndexError as exc:  # no ``t`` item, or an item without ``=``
        raise ValueError("no timestamp or signature to read") from exc
    return timestamp, signatures


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
        timestamp, signatures = parse_header(header)
        payload.decode("utf-8")  # stripe-python signs the body's text: no text, no signature
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidSignature("malformed", "Unreadable Stripe-Signature or body.") from exc
    if not signatures:
        raise InvalidSignature("malformed", f"No {SCHEME} signature in Stripe-Signature.")
    # HMAC-SHA256 over "<timestamp>.<body>": the UTF-8 bytes stripe-python signs, since
    # decoding valid UTF-8 and encoding it again gives the same bytes.
    signed = b"%d." % timestamp + payload
    # compare_digest refuses non-ASCII text (stripe-python lets that TypeError escape);
    # such a value is no hex digest, so it simply does not match.
    candidates = [s for s in signatures if s.isascii()]
    if not any(_signed_by(secret, signed, candidates) for secret in secrets):
        raise InvalidSignature("mismatch", "No signature matches the payload.")
    moment = time.time() if now is None else now
    if timestamp < moment - tolerance_seconds:
        raise InvalidSignature("stale", "Stripe-Signature timestamp is outside the tolerance.")
    if timestamp > moment + tolerance_seconds:
        raise InvalidSignature("future", "Stripe-Signature timestamp is in the future.")


def _signed_by(secret: str, signed: bytes, candidates: Sequence[str]) -> bool:
    if not secret.strip(" \t\r\n\f\v"):  # stripe-python refuses a blank secret
        return False
    expected = hmac.digest(secret.encode("utf-8"), signed, "sha256").hex()
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
