"""A bare ASGI app answering 200, served exactly as ``billing-fleet gateway`` serves its app.

Same path as ``api_gateway.app.serve`` under ``fleet.cli``: a ``uvicorn.Server``
on ``billing_fleet.http_server.server_config`` awaited inside ``ShutdownSignals.run``
(``asyncio.run``), so the loop and the HTTP protocol are the gateway's, not what
``uvicorn.run`` would pick.

Usage: ``python -m bench.plain_asgi PORT``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from billing_fleet.http_server import server_config
from billing_fleet.signals import ShutdownSignals

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STACK_PREFIX = "server stack: "
BODY = b'{"received":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    # Read the whole body, as the gateway must before it can verify the signature.
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def serve(port: int) -> None:
    config = server_config(app, "127.0.0.1", port)  # the gateway's (limits included)
    config.load()
    loop = type(asyncio.get_running_loop())
    protocol = config.http_protocol_class
    print(
        f"{STACK_PREFIX}{loop.__module__}.{loop.__name__}, "
        f"{protocol.__module__}.{protocol.__name__}",
        flush=True,
    )
    await uvicorn.Server(config).serve()


def main() -> int:
    with ShutdownSignals() as signals:
        signals.run(serve(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
