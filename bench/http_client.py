"""A lean HTTP/1.1 keep-alive client for the e2e load generator and poller.

They share the two cores with what they measure: aiohttp spent ~250 µs of CPU per request
there, a quarter of the machine at the e2e rates. Here a request is bytes written on a
kept-alive connection and its response is parsed by httptools (uvicorn's parser), about
a fifth of that. Only what the benchmark needs: one request at a time per connection,
Content-Length bodies, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools


class _Response:
    """httptools callbacks: the body and the end of one response."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Write a whole request; (status, body) of its response."""
        self._writer.write(request)
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        while not response.complete:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            parser.feed_data(data)
        return parser.get_status_code(), bytes(response.body)

    def close(self) -> None:
        self._writer.close()


class Client:
    """At most ``connections`` requests in flight to one ``host:port``, each connection
    kept alive and reused (opened on first use, replaced after an error)."""

    def __init__(self, base_url: str, connections: int) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self._idle: asyncio.Queue[Connection | None] = asyncio.Queue()
        for _ in range(connections):
            self._idle.put_nowait(None)  # a slot; its connection opens on first use

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
    ) -> bytes:
        """The bytes of one request (build them once, send them many times)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        async with self._connection() as connection:
            return await connection.send(request)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        connection = await self._idle.get()
        try:
            if connection is None:
                connection = Connection(*await asyncio.open_connection(self.host, self.port))
            yield connection
        except BaseException:
            if connection is not None:
                connection.close()
            connection = None
            raise
        finally:
            self._idle.put_nowait(connection)

    async def close(self) -> None:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection is not None:
                connection.close()
