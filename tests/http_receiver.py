"""A real loopback HTTP/1.1 server standing for a webhook receiver, in the test's loop.

Each path answers as told (a status and headers, after a delay or once a gate is open,
or ``HOLD``: read the request, never answer); every request is counted by its
``webhook-id`` header, and the ids answered 2xx apart, so a test sees what was delivered
and whether anything came twice; ``received`` keeps each request's headers and body (to
verify a signature). ``stop()`` closes the listener and every open connection (the
endpoint is down: connection refused); ``start()`` listens on the same port again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

HOLD: Final = -1


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    """Names in lowercase."""
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (a slow receiver)."""
    gate: asyncio.Event | None = None
    """Answer only once it is set (a receiver the test lets answer when it is ready)."""


class Receiver:
    def __init__(self) -> None:
        self.port = _free_port()
        self.answers: dict[str, Answer | int] = {}
        self.default: Answer | int = Answer()
        self.requests: Counter[tuple[str, str]] = Counter()  # (path, webhook-id)
        self.accepted: Counter[tuple[str, str]] = Counter()
        self.bodies: dict[str, bytes] = {}
        self.received: list[Received] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def ids(self, path: str, counter: Counter[tuple[str, str]] | None = None) -> Counter[str]:
        return Counter({i: n for (p, i), n in (counter or self.accepted).items() if p == path})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                delivery_id = headers.get("webhook-id", "")
                self.requests[(path, delivery_id)] += 1
                self.received.append(Received(path, headers, body))
                answer = self.answers.get(path, self.default)
                if answer == HOLD:
                    await asyncio.Event().wait()  # until the connection is closed
                assert isinstance(answer, Answer)
                if answer.gate is not None:
                    await answer.gate.wait()
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                if 200 <= answer.status < 300:
                    self.accepted[(path, delivery_id)] += 1
                    self.bodies[delivery_id] = body
                extra = "".join(f"{n}: {v}\r\n" for n, v in answer.headers.items())
                writer.write(
                    f"HTTP/1.1 {answer.status} X\r\ncontent-length: 0\r\n{extra}\r\n".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
