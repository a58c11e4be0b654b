"""The fleet's uvicorn server (billing_fleet.http_server) bounds requests, on real sockets.

Slow-header clients are closed within the header timeout, an 8 MB header is refused, a
body held or trickled past the body timeout is answered 408, the graceful drain is
bounded, and ordinary requests, keep-alive, slow apps and heads or bodies split over
several packets are served as before.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import uvicorn

from billing_fleet.http_server import ServerLimits, server_config, start_server
from fleet.embedded import free_port
from tests.http_clients import (
    connect,
    huge_header,
    read_response,
    read_until_closed,
    request,
    trickle_head,
)
from workers.runtime.http import HttpServer, create_app

Message = MutableMapping[str, Any]
LIMITS = ServerLimits(
    max_header_bytes=64 * 1024,
    header_timeout_seconds=1.0,
    keep_alive_seconds=1,
    body_timeout_seconds=1.0,
    shutdown_timeout_seconds=1,
)
BODY = b"ok"


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/slow":
        await asyncio.sleep(LIMITS.header_timeout_seconds * 2)
    answer = BODY
    if scope["path"] == "/read":  # reads the whole body first, answers its length
        received = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                DISCONNECTED.append(scope["path"])
                return
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = str(len(received)).encode()
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
    if scope["path"] == "/hang":  # answered, then never returns (a handler stuck after)
        await asyncio.sleep(3600)


DISCONNECTED: list[str] = []  # paths whose app saw the client disconnect mid-body


@pytest.fixture
async def port() -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, LIMITS, lifespan="off"))
    task = await start_server(server, "test-http")
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def test_a_client_sending_its_headers_slowly_is_closed_within_the_timeout(
    port: int,
) -> None:
    seen = await asyncio.to_thread(trickle_head, port, every=0.2, give_up_after=6.0)

    assert seen.closed_after is not None, "the server held the trickling client for 6 s"
    assert seen.closed_after < LIMITS.header_timeout_seconds + 2.0
    assert seen.response.startswith(b"HTTP/1.1 408 "), seen.response


async def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    def idle() -> tuple[float, bool]:
        started = time.monotonic()
        with connect(port) as sock:
            _, closed = read_until_closed(sock, 6.0)
        return time.monotonic() - started, closed

    elapsed, closed = await asyncio.to_thread(idle)

    assert closed, "an idle connection stayed open for 6 s"
    assert elapsed < LIMITS.header_timeout_seconds + 2.0


async def test_an_8_mb_header_is_refused_with_431(port: int) -> None:
    response, closed = await asyncio.to_thread(huge_header, port, 8 * 1024 * 1024)

    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["status"] == 431
    assert closed


async def test_a_head_over_the_cap_is_refused_when_it_comes_in_one_read_with_its_body(
    port: int,
) -> None:
    """The whole request in one send: the head completes inside one received chunk."""

    def one_send() -> tuple[bytes, bool]:
        head = request("/", {"X-Big": "d" * (LIMITS.max_header_bytes + 100), "Content-Length": "2"})
        with connect(port) as sock:
            sock.sendall(head + b"hi")
            return read_until_closed(sock, 5.0)

    response, closed = await asyncio.to_thread(one_send)

    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert closed


async def test_requests_under_the_cap_and_keep_alive_still_work(port: int) -> None:
    def three_on_one_connection() -> list[bytes]:
        with connect(port) as sock:
            answers = []
            for n in range(3):
                # 40 KiB of headers: big JWTs and Stripe headers are a few KB.
                sock.sendall(request("/", {f"X-Fill-{n}": "b" * 40_000}))
                answers.append(read_response(sock))
            return answers

    answers = await asyncio.to_thread(three_on_one_connection)

    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert all(a.endswith(BODY) for a in answers)


async def test_a_head_split_over_packets_within_the_timeout_is_served(port: int) -> None:
    def split() -> bytes:
        with connect(port) as sock:
            whole = request("/", {"X-A": "1", "X-B": "2"})
            for part in (whole[:10], whole[10:30], whole[30:]):
                sock.sendall(part)
                time.sleep(0.25)  # 0.75 s in all, under the 1 s timeout
            return read_response(sock)

    assert (await asyncio.to_thread(split)).startswith(b"HTTP/1.1 200 ")


async def test_an_app_slower_than_the_header_timeout_still_answers(port: int) -> None:
    """The head timer covers reading the head only, never the time the app takes."""

    def slow() -> bytes:
        with connect(port) as sock:
            sock.sendall(request("/slow"))
            return read_response(sock, timeout=10)

    assert (await asyncio.to_thread(slow)).startswith(b"HTTP/1.1 200 ")


async def test_an_idle_keep_alive_connection_closes_after_the_keep_alive_time(port: int) -> None:
    def idle_after_one() -> tuple[float, bool]:
        with connect(port) as sock:
            sock.sendall(request("/"))
            read_response(sock)
            answered = time.monotonic()
            _, closed = read_until_closed(sock, 6.0)
            return time.monotonic() - answered, closed

    elapsed, closed = await asyncio.to_thread(idle_after_one)

    assert closed
    assert elapsed < LIMITS.keep_alive_seconds + 2.0


async def test_a_malformed_request_gets_a_problem_400(port: int) -> None:
    def malformed() -> tuple[bytes, bool]:
        with connect(port) as sock:
            sock.sendall(b"GET /a\x01b HTTP/1.1\r\nHost: test\r\n\r\n")
            return read_until_closed(sock, 5.0)

    response, closed = await asyncio.to_thread(malformed)

    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["status"] == 400
    assert closed


def post(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n".encode()


def held_body(port: int, path: str, sent: bytes, length: int, wait: float) -> tuple[bytes, float]:
    """Send a head declaring ``length`` body bytes and only ``sent`` of them, then hold:
    what the server sends and how long until it closed (``wait`` if it did not)."""
    with connect(port) as sock:
        sock.sendall(post(path, length) + sent)
        started = time.monotonic()
        response, closed = read_until_closed(sock, wait)
        return response, (time.monotonic() - started) if closed else wait


async def test_a_client_holding_its_body_gets_408_and_is_closed(port: int) -> None:
    DISCONNECTED.clear()
    response, took = await asyncio.to_thread(held_body, port, "/read", b"0123456789", 100, 6.0)

    assert took < LIMITS.body_timeout_seconds + 2.0, "the server held the body's reader"
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), response[:200]
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["status"] == 408
    # The handler waiting for the body was let go (the server's drain would wait for it).
    await asyncio.sleep(0.1)
    assert DISCONNECTED == ["/read"]


async def test_a_body_trickled_past_the_deadline_gets_408(port: int) -> None:
    """The deadline bounds the whole body, not the time between its bytes."""

    def trickle() -> tuple[bytes, float]:
        with connect(port) as sock:
            sock.sendall(post("/read", 100))
            started = time.monotonic()
            sock.settimeout(0.2)
            received = b""
            for _ in range(30):  # a byte every 0.2 s: 6 s for 30 bytes
                try:
                    sock.sendall(b"x")
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                if not chunk:
                    break
                received += chunk
            return received, time.monotonic() - started

    response, took = await asyncio.to_thread(trickle)

    assert response.startswith(b"HTTP/1.1 408 "), response[:200]
    assert took < LIMITS.body_timeout_seconds + 2.0


async def test_a_body_in_pieces_within_the_timeout_is_served(port: int) -> None:
    def pieces() -> bytes:
        with connect(port) as sock:
            sock.sendall(post("/read", 30))
            for _ in range(3):
                time.sleep(0.25)  # 0.75 s in all, under the 1 s timeout
                sock.sendall(b"x" * 10)
            return read_response(sock)

    response = await asyncio.to_thread(pieces)

    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert response.endswith(b"\r\n\r\n30")


async def test_a_body_held_after_the_app_answered_only_closes_the_connection(port: int) -> None:
    """The app answered without reading the body: no second answer, but the connection
    of a client that holds the rest is not kept forever."""
    response, took = await asyncio.to_thread(held_body, port, "/", b"", 100, 6.0)

    assert took < LIMITS.body_timeout_seconds + 2.0
    assert response.startswith(b"HTTP/1.1 200 "), response[:200]
    assert response.count(b"HTTP/1.1") == 1, response


async def test_the_graceful_drain_is_bounded_by_the_shutdown_timeout() -> None:
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, LIMITS, lifespan="off"))
    task = await start_server(server, "test-http")
    try:
        with connect(port) as sock:
            sock.sendall(request("/hang"))
            await asyncio.to_thread(read_response, sock)  # its handler is still running
            loop = asyncio.get_running_loop()
            server.should_exit = True
            stopping_at = loop.time()
            await asyncio.wait([task], timeout=10)
            took = loop.time() - stopping_at
    finally:
        server.should_exit = server.force_exit = True
        await task

    assert took < LIMITS.shutdown_timeout_seconds + 2.0


async def test_the_worker_http_server_bounds_heads_too() -> None:
    port = free_port()
    server = HttpServer(create_app({}, "{}"), "127.0.0.1", port)
    await server.start()
    try:
        response, closed = await asyncio.to_thread(huge_header, port, 8 * 1024 * 1024)
    finally:
        await server.stop()

    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert closed
