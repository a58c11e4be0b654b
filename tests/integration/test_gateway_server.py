"""The gateway's HTTP surface on real sockets: head limits, no slash redirects, offline
/docs, and the admin port (both modes: everything on one port, or admin paths apart)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.gateway import Gateway, free_port, serve_gateway, start_gateway
from tests.gateway_process import GATEWAY, gateway_env
from tests.http_clients import (
    connect,
    huge_header,
    read_response,
    read_until_closed,
    request,
    trickle_head,
)
from tests.stripe_fixtures import load_event, signed

pytestmark = pytest.mark.integration

ADMIN_PATHS = ["/metrics", "/docs", "/docs/swagger-ui.css", "/openapi.json", "/asyncapi.json"]
PROBES = ["/healthz", "/readyz"]


@dataclass
class Ports:
    public: str
    admin: str


@pytest.fixture(scope="module")
async def admin_mode(gateway: Gateway) -> AsyncIterator[Ports]:
    """The session gateway's settings with BILLING_GATEWAY_ADMIN_PORT set."""
    public, admin = free_port(), free_port()
    settings = gateway.settings.model_copy(
        update={"gateway_port": public, "gateway_admin_port": admin}
    )
    async with serve_gateway(settings) as app:
        assert await app.state.publisher.wait_connected(10), "gateway never reached Kafka"
        yield Ports(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{admin}")


async def get(base: str, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        return await client.get(path, headers=headers)


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, (response.request.url, response.status_code)
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers


# -- item 19: the admin port ----------------------------------------------------------------


async def test_without_an_admin_port_everything_is_on_the_gateway_port(gateway: Gateway) -> None:
    for path in [*ADMIN_PATHS, *PROBES]:
        response = await get(gateway.url, path)
        assert response.status_code == 200, (path, response.status_code)


async def test_the_admin_port_serves_the_admin_paths_and_the_probes_only(admin_mode: Ports) -> None:
    for path in [*ADMIN_PATHS, *PROBES]:
        response = await get(admin_mode.admin, path)
        assert response.status_code == 200, (path, response.status_code)
    assert_not_found(await get(admin_mode.admin, "/v1/entitlements"))
    async with httpx.AsyncClient(base_url=admin_mode.admin, timeout=10) as client:
        assert_not_found(await client.post("/webhooks/stripe", content=b"{}"))


async def test_the_public_port_answers_404_for_the_admin_paths(admin_mode: Ports) -> None:
    for path in ADMIN_PATHS:
        assert_not_found(await get(admin_mode.public, path))
    for path in PROBES:
        assert (await get(admin_mode.public, path)).status_code == 200, path
    # The public routes still answer there.
    assert (await get(admin_mode.public, "/v1/entitlements")).status_code == 401
    async with httpx.AsyncClient(base_url=admin_mode.public, timeout=10) as client:
        unsigned = await client.post("/webhooks/stripe", content=b"{}")
    assert unsigned.status_code == 400


def _invalid_signature_count(metrics: str) -> float:
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("billing_webhooks_received_total{")
        and 'outcome="invalid_signature"' in line
    )
    return float(line.rsplit(" ", 1)[1])


async def test_both_ports_share_the_app_state(admin_mode: Ports) -> None:
    """One publisher, one pool, one registry: the admin port's /readyz sees the broker and
    PostgreSQL the public port uses, and its /metrics counts the public port's webhooks."""
    ready = await get(admin_mode.admin, "/readyz")
    assert ready.json()["checks"] == {"kafka": "ok", "database": "ok"}
    before = _invalid_signature_count((await get(admin_mode.admin, "/metrics")).text)

    async with httpx.AsyncClient(base_url=admin_mode.public, timeout=10) as client:
        assert (await client.post("/webhooks/stripe", content=b"{}")).status_code == 400

    after = _invalid_signature_count((await get(admin_mode.admin, "/metrics")).text)
    assert after == before + 1


async def test_a_taken_admin_port_stops_the_gateway_before_it_serves(kafka: Any) -> None:
    public = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        env = gateway_env(
            KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
            BILLING_STRIPE_WEBHOOK_SECRETS="whsec_unused",
            BILLING_GATEWAY_PORT=str(public),
            BILLING_GATEWAY_ADMIN_PORT=str(taken_port),
        )
        result = await asyncio.to_thread(
            subprocess.run, GATEWAY, env=env, capture_output=True, text=True, timeout=30
        )

    # The preflight names the setting in one line, before anything is started or served.
    assert result.returncode == 1, result.stderr
    [error] = result.stderr.splitlines()
    assert f"port {taken_port} on 127.0.0.1 is in use" in error
    assert "BILLING_GATEWAY_ADMIN_PORT" in error


# -- item 8: no trailing-slash redirects ----------------------------------------------------

SLASHED = [
    "/v1/entitlements/",
    "/v1/entitlements/seats/",
    "/v1/customers/cus_1/entitlements/",
    "/v1/customers/cus_1/entitlements/seats/",
    "/healthz/",
    "/readyz/",
    "/metrics/",
    "/docs/",
    "/openapi.json/",
    "/asyncapi.json/",
]


async def test_a_trailing_slash_is_404_never_a_redirect_to_the_callers_host(
    gateway: Gateway, admin_mode: Ports
) -> None:
    for base in (gateway.url, admin_mode.public, admin_mode.admin):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for path in SLASHED:
                response = await client.get(path, headers={"Host": "attacker.example"})
                assert_not_found(response)
            webhook = await client.post("/webhooks/stripe/", content=b"{}")
            assert_not_found(webhook)


# -- item 17: /docs without internet access ------------------------------------------------


def referenced_urls(html: str) -> list[str]:
    """Every URL the page loads: src/href attributes and Swagger UI's spec ``url``."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    found += re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)
    return found


@pytest.mark.parametrize("mode", ["one port", "admin port"])
async def test_docs_load_nothing_from_another_host(
    gateway: Gateway, admin_mode: Ports, mode: str
) -> None:
    base = gateway.url if mode == "one port" else admin_mode.admin
    page = await get(base, "/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")

    urls = referenced_urls(page.text)
    assert len(urls) >= 4, urls  # script, stylesheet, favicon, the OpenAPI document
    assert not re.search(r"(?:https?:)?//[\w.-]", page.text.replace("http-equiv", "")), page.text
    for url in urls:
        assert not urlsplit(url).netloc and not urlsplit(url).scheme, url
        asset = await get(base, url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert "SwaggerUIBundle" in (await get(base, "/docs/swagger-ui-bundle.js")).text


async def test_redoc_is_not_offered(gateway: Gateway) -> None:
    assert_not_found(await get(gateway.url, "/redoc"))


# -- item 6: the gateway's server bounds request heads --------------------------------------


async def test_the_gateway_refuses_an_8_mb_header(gateway: Gateway) -> None:
    port = gateway.settings.gateway_port
    response, closed = await asyncio.to_thread(huge_header, port, 8 * 1024 * 1024)
    assert response.startswith(b"HTTP/1.1 431 "), response[:200]
    assert closed


async def test_the_gateway_applies_its_head_and_keep_alive_settings(gateway: Gateway) -> None:
    port = free_port()
    settings = gateway.settings.model_copy(
        update={
            "gateway_port": port,
            "gateway_max_header_bytes": 8192,
            "gateway_header_timeout_seconds": 1.0,
            "gateway_keep_alive_seconds": 1,
        }
    )

    def keep_alive_twice() -> list[bytes]:
        with connect(port) as sock:
            answers = []
            for _ in range(2):
                sock.sendall(request("/healthz", {"X-Fill": "c" * 4000}))
                answers.append(read_response(sock))
            return answers

    async with serve_gateway(settings):
        answers = await asyncio.to_thread(keep_alive_twice)
        too_big, _ = await asyncio.to_thread(huge_header, port, 16 * 1024)
        slow = await asyncio.to_thread(trickle_head, port, every=0.2, give_up_after=6.0)

    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2
    assert too_big.startswith(b"HTTP/1.1 431 "), too_big[:200]
    assert slow.closed_after is not None and slow.closed_after < 3.0, slow


# -- request bodies: a client that sends a head and holds the body ---------------------------

BODY_TIMEOUT = 1.0
MARGIN = 2.0  # scheduling slack on a loaded 2-core machine; a hang takes forever


def hold_webhook_body(port: int, wait: float) -> tuple[bytes, float | None]:
    """POST a signed webhook's head and the first bytes of its body, then hold the rest:
    what the gateway sends, and after how long it closed (None: still open at ``wait``)."""
    body, headers = signed(load_event("customer.created__rubymock__1"))
    head = [
        "POST /webhooks/stripe HTTP/1.1",
        "Host: test",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with connect(port) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:20])
        started = time.monotonic()
        received, closed = read_until_closed(sock, wait)
        return received, (time.monotonic() - started) if closed else None


def incomplete_count(metrics: str) -> float:
    prefix = 'billing_webhooks_received_total{outcome="incomplete",type="unknown"} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_a_webhook_whose_body_is_held_gets_408_and_nothing_is_logged_as_an_error(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = gateway.settings.model_copy(
        update={"gateway_port": port, "gateway_body_timeout_seconds": BODY_TIMEOUT}
    )
    async with serve_gateway(settings):
        before = incomplete_count((await get(f"http://127.0.0.1:{port}", "/metrics")).text)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            response, closed_after = await asyncio.to_thread(hold_webhook_body, port, 8.0)
            await asyncio.sleep(0.2)  # the handler sees the connection closed
        after = incomplete_count((await get(f"http://127.0.0.1:{port}", "/metrics")).text)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    assert closed_after is not None, "the gateway held the connection 8 s"
    assert closed_after < BODY_TIMEOUT + MARGIN
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), response[:300]
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["status"] == 408
    assert after == before + 1
    assert errors == []


async def test_stopping_the_gateway_while_a_client_holds_a_body_drains_in_time(
    gateway: Gateway,
) -> None:
    """SIGTERM's graceful drain waits for the handler reading that body: the body's
    deadline ends it (before, the drain waited for as long as the client held on)."""
    port = free_port()
    settings = gateway.settings.model_copy(
        update={"gateway_port": port, "gateway_body_timeout_seconds": BODY_TIMEOUT}
    )
    _, servers, run = await start_gateway(settings)
    try:
        holder = asyncio.create_task(asyncio.to_thread(hold_webhook_body, port, 8.0))
        await asyncio.sleep(0.3)  # the head is in, the handler waits for the body
        loop = asyncio.get_running_loop()
        servers.stop()
        stopping_at = loop.time()
        await asyncio.wait([run], timeout=8.0)
        took = loop.time() - stopping_at
        assert run.done(), "the drain waited for the held body"
        run.result()
        assert took < BODY_TIMEOUT + MARGIN
        response, _ = await holder
        assert response.startswith(b"HTTP/1.1 408 "), response[:300]
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


async def test_sigterm_stops_both_servers_of_the_gateway_process(kafka: Any) -> None:
    public, admin = free_port(), free_port()
    env = gateway_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        BILLING_STRIPE_WEBHOOK_SECRETS="whsec_unused",
        BILLING_GATEWAY_PORT=str(public),
        BILLING_GATEWAY_ADMIN_PORT=str(admin),
    )
    gateway = await asyncio.create_subprocess_exec(
        *GATEWAY, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    healthy = await get(f"http://127.0.0.1:{public}", "/healthz")
                    metrics = await get(f"http://127.0.0.1:{admin}", "/metrics")
                    if (healthy.status_code, metrics.status_code) == (200, 200):
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        gateway.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, stderr = await gateway.communicate()
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()

    assert gateway.returncode == 0, stderr.decode()
    for port in (public, admin):
        with pytest.raises(httpx.ConnectError):
            await get(f"http://127.0.0.1:{port}", "/healthz")
