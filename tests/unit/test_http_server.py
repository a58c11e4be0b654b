"""The fleet's uvicorn server (billing_fleet.http_server) bounds request heads, on real sockets.

Slow-header clients are closed within the header timeout, an 8 MB header is refused,
and ordinary requests, keep-alive, slow apps and heads split over several packets are
served as before.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import uvicorn

from billing_fleet.embedded import free_port
from billing_fleet.http_server import ServerLimits, server_config, start_server
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
LIMITS = ServerLimits(max_header_bytes=64 * 1024, header_timeout_seconds=1.0, keep_alive_seconds=1)
BODY = b"ok"


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/slow":
        await asyncio.sleep(LIMITS.header_timeout_seconds * 2)
    headers = [(b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


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
