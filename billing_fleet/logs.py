"""Structured JSON logs, one object per line on stderr.

Handlers log ids (Stripe event id, trace id), never bodies: no secrets, card data or
e-mail addresses reach the log.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

NOISY_LIBRARIES = ("aiokafka", "faststream", "uvicorn.error", "asyncio")


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (reconnect loops) at WARNING unless we debug.
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
