"""The uvicorn server every HTTP process of the fleet runs, with limits on requests.

uvicorn's httptools protocol caps neither the size of a request's line and headers nor
the time they or the body take to arrive: its keep-alive timer stops at a request's
first byte, so a client trickling header bytes, or sending a head and then holding its
body, holds its socket (and, for a body, a handler and any graceful drain) forever, and
an 8 MB header is read whole. ``LimitedHttpToolsProtocol`` adds these bounds with
per-connection state only: bytes are counted per received chunk (not per byte), and a
timer is armed when a connection opens, again only when a request's head does not
arrive in one chunk, and for a body only when it does not arrive with its head, so a
request that fits one read (nearly all) costs no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Literal

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

LifespanMode = Literal["auto", "on", "off"]

PROBE_TIMEOUT_SECONDS = 2.0
"""Longest one probe of a dependency waits (``/readyz``'s checks, a broker's reachability)."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """A server's limits; the defaults are the gateway settings' defaults."""

    max_header_bytes: int = 65_536
    header_timeout_seconds: float = 10.0
    keep_alive_seconds: int = 5
    body_timeout_seconds: float = 10.0
    shutdown_timeout_seconds: int = 20


def _problem_response(
    status: int, detail: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection."""
    phrase = HTTPStatus(status).phrase
    body = json.dumps(
        {"type": "about:blank", "title": phrase, "status": status, "detail": detail}
    ).encode()
    head = [f"HTTP/1.1 {status} {phrase}".encode()]
    head += [name + b": " + value for name, value in default_headers]
    head += [
        b"content-type: application/problem+json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request whose head is over the cap."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a byte cap and a deadline on each request head,
    and a deadline on each request body.

    A head (request line and headers) larger than ``max_header_bytes`` is answered 431,
    one not complete ``header_timeout`` seconds after the connection opened or after its
    first chunk arrived is answered 408; both close the connection. A body not complete
    ``body_timeout`` seconds after its head is answered 408 (unless the app answered
    already) and the connection is closed: the app's ``receive`` then says the client
    disconnected. Between requests uvicorn's own keep-alive timeout applies. Parse errors
    answer problem+json 400.
    """

    max_header_bytes: ClassVar[int]
    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # received since the last head completed
        self._in_head = False  # a request began and its headers are not complete yet
        self._in_body = False  # between a head and the end of its body
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._too_large = False

    @classmethod
    def with_limits(cls, limits: ServerLimits) -> type[LimitedHttpToolsProtocol]:
        attributes = {
            "max_header_bytes": limits.max_header_bytes,
            "header_timeout": limits.header_timeout_seconds,
            "body_timeout": limits.body_timeout_seconds,
        }
        return type(cls.__name__, (cls,), attributes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never completes a head (or never sends one) is closed too.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head:
            if self.transport.is_closing():
                return
            if self._head_bytes > self.max_header_bytes:
                self._refuse_too_large()
            elif self._head_timer is None:
                self._arm_head_timer()
        elif self._in_body and self._body_timer is None and not self.transport.is_closing():
            # The body did not come whole with its head: from now on it has a deadline.
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        received, self._head_bytes = self._head_bytes, 0
        # A head that came in one chunk with more (a body) was never checked; the chunk's
        # size only bounds it, so measure the head itself, still only when over the cap.
        if received > self.max_header_bytes and self._head_size() > self.max_header_bytes:
            self._too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn answers via send_400_response
        self._in_head, self._in_body = False, True
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self._cancel_body_timer()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_too_large()
        else:
            self._refuse(400, msg)

    def _head_size(self) -> int:
        """Bytes of the request line and headers just parsed (separators approximated)."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse_too_large(self) -> None:
        limit = self.max_header_bytes
        self._refuse(431, f"Request line and headers exceed {limit} bytes.")

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            self._refuse(408, f"Request headers not received within {self.header_timeout} s.")
        elif not self.transport.is_closing():
            self.transport.close()  # opened and sent nothing

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        # Answer only the request being served: not when the app has begun its answer,
        # nor when this request waits behind an earlier (pipelined) one still answering.
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not self.pipeline:
            detail = f"Request body not received within {self.body_timeout} s."
            default_headers = self.server_state.default_headers
            self.transport.write(_problem_response(408, detail, default_headers))
        self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` and close, unless an earlier pipelined response is still going
        out (writing now would interleave with it): then only close."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            default_headers = self.server_state.default_headers
            self.transport.write(_problem_response(status, detail, default_headers))
        self.transport.close()


def server_config(
    app: Any,
    host: str,
    port: int,
    limits: ServerLimits | None = None,
    *,
    lifespan: LifespanMode = "auto",
) -> uvicorn.Config:
    """How the fleet serves ``app``: our logging (no uvicorn access log), uvloop where
    installed, the limited httptools protocol, and a bound on the graceful drain (then
    the requests still in flight are cancelled)."""
    limits = limits or ServerLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=LimitedHttpToolsProtocol.with_limits(limits),
        timeout_keep_alive=limits.keep_alive_seconds,
        timeout_graceful_shutdown=limits.shutdown_timeout_seconds,
        lifespan=lifespan,
        log_config=None,
        access_log=False,
    )


def bind_socket(config: uvicorn.Config) -> socket.socket:
    """``config``'s socket, bound now; a taken address logs one error naming it and exits
    3, as uvicorn does for the port it binds itself (whose error does not name it)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        log.error("cannot listen on %s port %d: %s", config.host, config.port, exc.strerror)
        raise SystemExit(STARTUP_FAILURE) from exc
    return sock


class SignalFreeServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM alone: its owner stops it
    (``should_exit``), e.g. after finishing its own work on the signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_server(server: uvicorn.Server, name: str) -> asyncio.Task[None]:
    """Run ``server`` in a task and return it once the server listens; raise what stopped
    it if it did not get there (a port taken, a failed lifespan startup)."""
    task = asyncio.create_task(server.serve(), name=name)
    # uvicorn offers a flag, not an event
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if task.done():
        await task
        raise OSError(f"{name} stopped during startup")
    return task
