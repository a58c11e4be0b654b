"""The outermost ASGI layer of the gateway, in front of the fast paths and of FastAPI.

Two jobs every route needs and no route should repeat:

- Paths PostgreSQL cannot hold are refused (400) before any handler sees them: a NUL
  (``%00``), or percent-escapes that are not UTF-8 (lone surrogates included), which
  uvicorn would otherwise pass on as NUL or silently as U+FFFD. Only a path with a ``%``
  is decoded again: the parser already refuses raw control and non-ASCII bytes.
- The last resort: an exception no handler expected answers a problem+json 500 with no
  detail of the error, and is logged once, as one line with its class and the path (cut
  to ``contracts.labels.LOG_VALUE_LIMIT`` characters, as every outside value).
"""

from __future__ import annotations

import contextlib
import logging
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway.problems import ANSWERED_500, INTERNAL_ERROR, problem
from contracts.events import storable_text
from contracts.labels import log_value

log = logging.getLogger(__name__)


def storable_path(scope: Scope) -> bool:
    """Whether the request path decodes to text PostgreSQL can hold (UTF-8, no NUL)."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:  # a server that does not give the raw path: check the decoded one
        return storable_text(scope["path"])
    if b"%" not in raw:
        return True
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        return False
    try:
        decoded.decode("utf-8")  # strict: refuses invalid bytes and encoded surrogates
    except UnicodeDecodeError:
        return False
    return True


def guarded(app: ASGIApp) -> ASGIApp:
    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)  # lifespan: its failures must stop startup
            return
        if not storable_path(scope):
            detail = "The request path must be UTF-8 text without NUL characters."
            await problem(400, detail)(scope, receive, send)
            return
        try:
            await app(scope, receive, send)
        except Exception as exc:
            _log_unexpected(scope, exc)
            # FastAPI's ServerErrorMiddleware re-raises what it already answered with our
            # handler (problems.py); the fast paths have no such layer: answer here.
            if not scope.get(ANSWERED_500):
                await _answer_500(scope, receive, send)

    return guard


def _log_unexpected(scope: Scope, exc: Exception) -> None:
    route = scope.get("route")
    log.error(
        "unexpected error",
        exc_info=exc,
        extra={
            "error_class": type(exc).__name__,
            "method": scope["method"],
            "path": log_value(scope["path"]),  # the client's: up to the head limit
            "route": getattr(route, "path", None),
            "outcome": "error",
        },
    )


async def _answer_500(scope: Scope, receive: Receive, send: Send) -> None:
    # RuntimeError: the failed response had already started and the server refuses a
    # second start; it closes the connection (a cut-off answer, never a traceback).
    with contextlib.suppress(RuntimeError):
        await problem(500, INTERNAL_ERROR)(scope, receive, send)
