"""A bare ASGI app answering 200, served exactly as ``billing-fleet gateway`` serves its app.

Same path as ``api_gateway.app.serve`` under ``billing_fleet.cli``: a ``uvicorn.Server``
awaited inside ``ShutdownSignals.run`` (``asyncio.run``), so the loop and the HTTP
implementation are whatever uvicorn picks for the gateway, not what ``uvicorn.run`` would.

Usage: ``python -m bench.plain_asgi PORT``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from billing_fleet.dev import ShutdownSignals

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
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    config.load()  # picks the HTTP implementation; the benchmark prints what it got
    loop = type(asyncio.get_running_loop())
    print(
        f"{STACK_PREFIX}{loop.__module__}.{loop.__name__}, {config.http}: "
        f"{config.http_protocol_class.__name__}",
        flush=True,
    )
    await uvicorn.Server(config).serve()


def main() -> int:
    with ShutdownSignals() as signals:
        signals.run(serve(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
