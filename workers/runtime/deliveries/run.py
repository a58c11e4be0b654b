"""How ``run_worker`` starts a worker's dispatcher and closes its channels."""

from __future__ import annotations

import logging

import asyncpg

from workers.runtime.deliveries.dispatcher import Dispatcher
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import WorkerSpec

log = logging.getLogger(__name__)


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
        lease_seconds=settings.delivery_lease_seconds,
        db_timeout=settings.worker_database_timeout_seconds,
        poll_interval=settings.delivery_poll_seconds,
        backoff_max=settings.worker_dependency_backoff_max_seconds,
    )


async def close_senders(spec: WorkerSpec) -> None:
    for name, sender in spec.channels.items():
        try:
            await sender.aclose()
        except Exception as exc:  # closing is best effort at shutdown
            log.warning("channel not closed", extra={"channel": name, "error": repr(exc)})
