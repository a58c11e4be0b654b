"""The workers ``billing-fleet dev`` runs in its process, rebuilt when their files change.

Every registered worker must build: one that does not (a broken catalog) stops ``dev``
before it accepts a webhook, since nobody would process what it accepts. While ``dev``
runs, a change to a file a worker declares (``WorkerSpec.watch_files``) rebuilds that
worker from its factory: a failed build is logged and the running worker keeps going; a
good one replaces it (the old one stops gracefully, its batch committed, then the new one
starts), without touching the broker, so its dead letters can be replayed next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from billing_fleet.logs import one_line
from billing_fleet.settings import CoreSettings
from workers.registry import WORKERS
from workers.runtime.declaration import (
    RUNTIME_MIGRATIONS,
    Factory,
    WorkerBuildError,
    WorkerDeclaration,
    build_spec,
)
from workers.runtime.deliveries.run import discard_senders
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import WorkerSpec

log = logging.getLogger(__name__)

# Editors save in bursts (write, rename, chmod): one rebuild per burst.
WATCH_DEBOUNCE_MS = 300


class WorkerFailed(RuntimeError):
    """A running worker stopped with an error."""


class DevWorkers:
    def __init__(
        self,
        settings: CoreSettings,
        factories: dict[str, Factory],
        declarations: dict[str, WorkerDeclaration] | None = None,
    ) -> None:
        """``factories`` by worker name; a worker with a declaration (every registered one)
        is built through it, so a build that disagrees with it fails."""
        self._settings = settings
        self._factories = factories
        self._declarations = declarations or {}
        self.specs: dict[str, WorkerSpec] = {}
        try:
            for name in factories:
                self.specs[name] = self._build(name)
        except BaseException:
            for spec in self.specs.values():  # built, but dev will not run them
                discard_senders(spec)
            raise
        self.failure: WorkerFailed | None = None

    @classmethod
    def registered(cls, settings: CoreSettings) -> DevWorkers:
        """Every registered worker, built; ``WorkerBuildError`` names the first that fails."""
        factories = {name: d.load_factory() for name, d in WORKERS.items()}
        return cls(settings, factories, dict(WORKERS))

    def _build(self, name: str) -> WorkerSpec:
        declaration = self._declarations.get(name)
        if declaration is None:  # a test's worker
            return build_spec(name, self._factories[name], self._settings)
        return declaration.build(self._settings, self._factories[name])

    def _migrations(self, name: str) -> tuple[str, ...]:
        declaration = self._declarations.get(name)
        return declaration.migration_packages if declaration else (RUNTIME_MIGRATIONS,)

    async def run(self, settings: RuntimeSettings) -> None:
        """Run every worker on ``settings`` (the resolved servers) until cancelled, or
        until one stops with an error (``WorkerFailed``, also kept in ``failure``)."""
        slots = [asyncio.create_task(self._slot(name, settings)) for name in self.specs]
        try:
            if not slots:
                await asyncio.Event().wait()  # nothing to run: wait for dev to stop
            done, _ = await asyncio.wait(slots, return_when=asyncio.FIRST_EXCEPTION)
            for slot in done:
                slot.result()
        except WorkerFailed as exc:
            self.failure = exc
            raise
        finally:
            await stop_all(slots)

    async def _slot(self, name: str, settings: RuntimeSettings) -> None:
        """Worker ``name`` for the whole session: run it, swap in a rebuilt one."""
        from workers.runtime.run import run_worker

        changed = asyncio.Event()
        watcher = asyncio.create_task(self._watch(name, changed), name=f"{name}-watch")
        migrations = self._migrations(name)

        def start(spec: WorkerSpec) -> asyncio.Task[None]:
            run = run_worker(spec, settings, serve_http=False, migrations=migrations)
            return asyncio.create_task(run)

        running = start(self.specs[name])
        change: asyncio.Task[Any] | None = None
        try:
            while True:
                change = asyncio.create_task(changed.wait())
                await asyncio.wait({running, change}, return_when=asyncio.FIRST_COMPLETED)
                change.cancel()
                if running.done():
                    error = None if running.cancelled() else running.exception()
                    log.error(
                        "worker stopped with an error", exc_info=error, extra={"worker": name}
                    )
                    raise WorkerFailed(
                        f"worker {name} stopped: {one_line(error) if error else 'returned'}"
                    ) from error
                changed.clear()
                spec = self._rebuild(name)
                if spec is None:
                    continue
                await stop_all([running])
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # A stop asked for while the old worker drained, even if something
                    # below swallowed it: the rebuilt worker must not start after it.
                    raise asyncio.CancelledError
                self.specs[name] = spec
                running = start(spec)
                log.info("worker reloaded: the new build starts", extra={"worker": name})
        finally:
            await stop_all([task for task in (change, watcher, running) if task is not None])

    def _rebuild(self, name: str) -> WorkerSpec | None:
        try:
            return self._build(name)
        except WorkerBuildError as exc:
            log.error(
                "worker not reloaded: its new build failed, the running one keeps running",
                extra={"worker": name, "error": str(exc)},
            )
            return None

    async def _watch(self, name: str, changed: asyncio.Event) -> None:
        files = {path.resolve() for path in self.specs[name].watch_files}
        if not files:
            return
        # The directories, not the files: editors replace a file by renaming a new one
        # over it, and a watch on the old file would see nothing after the first save.
        directories = {path.parent for path in files}

        def relevant(_: Change, path: str) -> bool:
            return Path(path).resolve() in files

        try:
            async with contextlib.aclosing(
                awatch(
                    *directories,
                    watch_filter=relevant,
                    debounce=WATCH_DEBOUNCE_MS,
                    recursive=False,
                    ignore_permission_denied=True,
                )
            ) as changes:
                async for _ in changes:
                    log.info("worker files changed, rebuilding", extra={"worker": name})
                    changed.set()
        except Exception as exc:  # no watcher (e.g. inotify limits): dev runs without reload
            log.warning(
                "not watching the worker's files: restart dev after changing them",
                extra={"worker": name, "error": repr(exc)},
            )


async def stop_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them to finish (a worker commits its batch first).

    Shielded: dev's own stop (a signal uvicorn re-raises after its shutdown) may cancel
    the caller meanwhile, and the workers must still finish their batch and commit. Such
    a cancel is held until they did, then raised: the caller must not go on (start a
    rebuilt worker, wait for more) after it was told to stop.
    """
    pending = [task for task in tasks if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # reported by whoever saw it end; retrieved, not logged again
    for task in pending:
        task.cancel()
    stopped = asyncio.gather(*pending, return_exceptions=True)
    cancelled = False
    while not stopped.done():
        try:
            await asyncio.shield(stopped)
        except asyncio.CancelledError:
            cancelled = True
    for task, result in zip(pending, stopped.result(), strict=True):
        if isinstance(result, Exception):
            log.error(
                "stopped with an error", extra={"task": task.get_name(), "error": repr(result)}
            )
    if cancelled:
        raise asyncio.CancelledError
