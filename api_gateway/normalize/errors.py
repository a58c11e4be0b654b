"""The two ways normalization refuses an event; the ingress maps each to an HTTP answer."""

from __future__ import annotations


class UnhandledEventType(Exception):
    """The Stripe event type is one we do not act on (answer 200, count it)."""


class UnmappableEvent(ValueError):
    """A handled type whose object lacks what we need (answer 422, Stripe retries)."""
