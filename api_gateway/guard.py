"""The edge: the one ASGI layer every request of the gateway passes through, outermost,
in front of the fast paths (``app.with_fast_paths``) and of FastAPI alike.

What every route needs and no route should repeat, in the order it applies:

- HTTP metrics (``http_metrics``): every answer, the edge's own refusals and 500s
  included, by route template, method and status. A fast path names its route in the
  scope (``ROUTE``), FastAPI does (``scope["route"]``); for a request answered before
  any route ran, ``route_of`` finds the template.
- Paths PostgreSQL cannot hold are refused (400) before any handler sees them: a NUL
  (``%00``), or percent-escapes that are not UTF-8 (lone surrogates included), which
  uvicorn would otherwise pass on as NUL or silently as U+FFFD. Only a path with a ``%``
  is decoded again: the parser already refuses raw control and non-ASCII bytes.
- The request-size limit: a body declared (Content-Length) over the limit is refused
  (413) before any handler runs; a chunked body that grows past it raises
  ``BodyTooLarge`` from ``receive`` in whichever handler reads it, answered 413 too.
- Problem responses: an ``HTTPException`` out of a fast path is answered as FastAPI's
  handlers answer it (``problems.problem``).
- The last resort: an exception no handler expected answers a problem+json 500 with no
  detail of the error, and is logged once, as one line with its class and the path (cut
  to ``contracts.labels.LOG_VALUE_LIMIT`` characters, as every outside value).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_gateway import http_metrics
from api_gateway.problems import INTERNAL_ERROR, problem
from contracts.events import storable_text
from contracts.labels import log_value

log = logging.getLogger(__name__)

# Scope key: the route template a fast path served (FastAPI sets "route" itself).
ROUTE = "billing.route"
# Scope key: set once the edge refused the body (FastAPI may answer the refusal itself).
_BODY_REFUSED = "billing.body_refused"
PATH_REFUSED = "The request path must be UTF-8 text without NUL characters."


class BodyTooLarge(HTTPException):
    """A request body over the limit. An HTTPException, so FastAPI's own body reading
    passes it on to its problem handler instead of turning it into a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Body exceeds {limit} bytes.")


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


def _body_framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length (None: none, or not a number the parser let through)
    and whether the body is chunked."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


def _limited(scope: Scope, receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` once the body read so far exceeds ``limit``.
    Only for chunked bodies: a declared length is checked up front, and the HTTP parser
    holds a body to the length it declared."""
    size = 0

    async def limited() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                scope[_BODY_REFUSED] = True
                raise BodyTooLarge(limit)
        return message

    return limited


def guarded(
    app: ASGIApp,
    *,
    max_body_bytes: int,
    route_of: Callable[[Scope], str | None],
    on_too_large: Callable[[str], None] | None = None,
) -> ASGIApp:
    """``app`` behind the edge. ``route_of``: the route template a request would take
    (None: no route), for answers given before any route ran; ``on_too_large(route)``:
    told of each body the edge refused, for a route that counts them in its own metrics."""

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)  # lifespan: its failures must stop startup
            return
        started_at = perf_counter()
        status = 0  # of the response started, once it is

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await _serve(scope, receive, send_noting_status, lambda: status != 0)
        finally:
            route = _route_label(scope, route_of)
            if on_too_large is not None and scope.get(_BODY_REFUSED):
                on_too_large(route)
            http_metrics.observe(route, scope["method"], status, perf_counter() - started_at)

    async def _serve(
        scope: Scope, receive: Receive, send: Send, started: Callable[[], bool]
    ) -> None:
        if not storable_path(scope):
            await problem(400, PATH_REFUSED)(scope, receive, send)
            return
        declared, chunked = _body_framing(scope)
        if declared is not None and declared > max_body_bytes:
            scope[_BODY_REFUSED] = True
            await _answer(BodyTooLarge(max_body_bytes), scope, receive, send)
            return
        if chunked:
            receive = _limited(scope, receive, max_body_bytes)
        try:
            await app(scope, receive, send)
        except HTTPException as exc:  # from a fast path (FastAPI answers its own), or
            # BodyTooLarge from the edge's receive, through a handler that let it pass
            if not started():
                await _answer(exc, scope, receive, send)
        except Exception as exc:
            _log_unexpected(scope, exc)
            # FastAPI's ServerErrorMiddleware re-raises what it already answered with our
            # handler (problems.py); the fast paths have no such layer: answer here. Once
            # a response started, the server closes the connection (a cut-off answer).
            if not started():
                await problem(500, INTERNAL_ERROR)(scope, receive, send)

    return guard


async def _answer(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    await problem(exc.status_code, str(exc.detail), headers=exc.headers)(scope, receive, send)


def _route_label(scope: Scope, route_of: Callable[[Scope], str | None]) -> str:
    template: str | None = scope.get(ROUTE)
    if template is None:
        route: Any = scope.get("route")  # FastAPI's, once its router matched
        template = getattr(route, "path", None) if route is not None else route_of(scope)
    return template or http_metrics.UNMATCHED


def _log_unexpected(scope: Scope, exc: Exception) -> None:
    route = scope.get("route")
    log.error(
        "unexpected error",
        exc_info=exc,
        extra={
            "error_class": type(exc).__name__,
            "method": scope["method"],
            "path": log_value(scope["path"]),  # the client's: up to the head limit
            "route": getattr(route, "path", None) or scope.get(ROUTE),
            "outcome": "error",
        },
    )
