"""Raw-socket HTTP clients for the server-limit tests: slow, huge and keep-alive requests.

Blocking sockets, run in a thread (``asyncio.to_thread``) while the server under test
serves on the test's event loop.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

CLOSED = "closed"


@dataclass
class Trickled:
    """What a client that sent a request head slowly saw."""

    closed_after: float | None  # seconds from connect to the server closing; None: still open
    response: bytes


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``timeout``, and whether it closed the socket."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, False
    except ConnectionResetError:
        pass
    return received, True


def trickle_head(port: int, *, every: float, give_up_after: float, lines: int = 1000) -> Trickled:
    """Send a request line, then one header line every ``every`` seconds, never the blank
    line that ends the head; stop when the server closes or after ``give_up_after``."""
    started = time.monotonic()
    sock = connect(port)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")
        sock.settimeout(every)
        received = b""
        for n in range(lines):
            if time.monotonic() - started > give_up_after:
                return Trickled(None, received)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                chunk = None
            except ConnectionResetError:
                return Trickled(time.monotonic() - started, received)
            if chunk == b"":
                return Trickled(time.monotonic() - started, received)
            if chunk:
                received += chunk
                continue
            try:
                sock.sendall(f"X-Slow-{n}: a\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                return Trickled(time.monotonic() - started, received)
        return Trickled(None, received)
    finally:
        sock.close()


def huge_header(port: int, size: int) -> tuple[bytes, bool]:
    """Send a request with one ``size``-byte header; the answer and whether it closed."""
    sock = connect(port)
    try:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: ")
            sock.sendall(b"a" * size + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused before reading it all: its answer is still there
        return read_until_closed(sock, 5.0)
    finally:
        sock.close()


def request(path: str = "/", headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: test",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One response with a Content-Length body, read off a keep-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body
