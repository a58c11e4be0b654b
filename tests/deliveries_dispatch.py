"""A dispatcher alone in its own process, for the SIGKILL test.

``python -m tests.deliveries_dispatch`` with ``DATABASE_URL``, ``TOY_WORKER`` and
``TOY_LEASE_SECONDS``; prints ``ready`` once its pool is open.
"""

from __future__ import annotations

import asyncio
import os

from billing_fleet.db import create_pool
from tests.deliveries_support import http_channel
from workers.runtime.deliveries.dispatcher import Dispatcher


async def main() -> None:
    pool = await create_pool(os.environ["DATABASE_URL"], max_size=4, connect_timeout=5.0)
    dispatcher = Dispatcher(
        pool,
        {"http": http_channel()},
        worker=os.environ["TOY_WORKER"],
        concurrency=4,
        lease_seconds=float(os.environ["TOY_LEASE_SECONDS"]),
        db_timeout=5.0,
        poll_interval=0.1,
    )
    print("ready", flush=True)
    await dispatcher.run()


if __name__ == "__main__":
    asyncio.run(main())
