"""How ``run_worker`` starts a worker's dispatcher and closes its channels."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from workers.runtime.deliveries.dispatcher import Dispatcher
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import WorkerSpec

log = logging.getLogger(__name__)
_closing: set[asyncio.Task[None]] = set()  # discard_senders' tasks, held until done


def dispatcher_for(
    spec: WorkerSpec, settings: RuntimeSettings, pool: asyncpg.Pool
) -> Dispatcher | None:
    """The worker's dispatcher, or None when it has no channels."""
    if not spec.channels:
        return None
    return Dispatcher(
        pool,
        spec.channels,
        worker=spec.name,
        concurrency=settings.delivery_concurrency,
        per_destination=settings.delivery_per_destination_concurrency,
        lease_seconds=settings.delivery_lease_seconds,
        db_timeout=settings.worker_database_timeout_seconds,
        poll_interval=settings.delivery_poll_seconds,
        backoff_max=settings.worker_dependency_backoff_max_seconds,
    )


def dispatcher_connections(spec: WorkerSpec) -> int:
    """Pool connections the dispatcher may hold at once: a claim (or a release, or the
    pending count) in its loop and a recording of results."""
    return 2 if spec.channels else 0


async def close_senders(spec: WorkerSpec) -> None:
    """Close the worker's channels (their HTTP clients); best effort."""
    for name, sender in spec.channels.items():
        try:
            await sender.aclose()
        except Exception as exc:  # closing is best effort at shutdown
            log.warning("channel not closed", extra={"channel": name, "error": repr(exc)})


def discard_senders(spec: WorkerSpec) -> None:
    """Close the channels of a spec that will not run (its build failed a check), from
    synchronous code: in the background of the running loop, or in a loop of its own."""
    if not spec.channels:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(close_senders(spec))
        return
    task = loop.create_task(close_senders(spec), name=f"{spec.name}-close-channels")
    _closing.add(task)
    task.add_done_callback(_closing.discard)
