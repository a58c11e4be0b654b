"""The two ways normalization refuses an event; the ingress maps each to an HTTP answer."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from contracts.events import NO_NUL


class UnhandledEventType(Exception):
    """The Stripe event type is one we do not act on (answer 200, count it)."""


class UnmappableEvent(ValueError):
    """A handled type whose object lacks what we need (answer 422, Stripe retries)."""


def refused(exc: ValidationError, path: str) -> UnmappableEvent:
    """The contract's refusal of what was read at ``path``: each field and why, never its
    value (the detail is logged and shown in Stripe's dashboard)."""
    errors = exc.errors(include_url=False, include_input=False)
    raw = exc.errors(include_url=False)
    problems = "; ".join(
        f"{_where(error['loc'])}{_why(error, original.get('input'))}"
        for error, original in zip(errors, raw, strict=True)
    )
    return UnmappableEvent(f"{path}: {problems}")


def _where(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part == "[key]":
            parts.append(" (key)")
        elif index == 0 and "." in part:
            continue  # the discriminator tag of the event union (e.g. subscription.activated)
        elif part.isidentifier():
            parts.append(f".{part}" if parts else part)
        else:  # a metadata key: quoted, as it may hold anything
            parts.append(f"[{json.dumps(part)}]")
    return f"{''.join(parts)}: " if parts else ""


def _why(error: ErrorDetails, value: Any) -> str:
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NO_NUL:
        return "contains NUL (\\u0000), which PostgreSQL cannot store"
    if value is None and error["type"].endswith("_type"):
        return "required, but missing (null)"
    return error["msg"]
