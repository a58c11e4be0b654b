"""Metric label values taken from outside input (request bodies, Kafka headers).

Every distinct label value is a time series, kept in memory and sent on every scrape, so a
value a sender makes up must not become one: it is kept only when it belongs to a known
set, else it is counted as ``other``. Logs keep the real value, cut to ``LOG_VALUE_LIMIT``.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Final

OTHER: Final = "other"
LABEL_LIMIT: Final = 100  # characters; longer text is never a known value (nor hashed)
LOG_VALUE_LIMIT: Final = 200  # characters of an outside value kept in a log line


def bounded_label(value: str, known: Container[str]) -> str:
    """``value`` if it is one of ``known`` (and at most ``LABEL_LIMIT`` long), else ``other``."""
    return value if len(value) <= LABEL_LIMIT and value in known else OTHER


def log_value(value: str) -> str:
    """``value`` for a log line: unchanged, or cut to ``LOG_VALUE_LIMIT`` characters."""
    return value if len(value) <= LOG_VALUE_LIMIT else value[: LOG_VALUE_LIMIT - 1] + "…"
