"""Signal handling every long-running command shares (``gateway``, ``worker``, ``dev``).

Core level: it imports nothing of the workers, the gateway or ``dev``, so a production
process loads only what it runs.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from types import FrameType, TracebackType
from typing import Any, Self


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop where it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
    else:
        uvloop.run(main)


class ShutdownSignals:
    """SIGINT/SIGTERM/SIGHUP end the coroutine given to ``run`` and let the caller clean up.

    While no coroutine runs (startup, cleanup of child processes) a signal is only
    remembered, so a stop never leaves a half-started or half-stopped child behind. A
    server that handles the signals itself (uvicorn) takes them over while it runs and
    re-raises them after its graceful shutdown; they then land here harmlessly. uvicorn
    takes only SIGINT and SIGTERM: a SIGHUP while it serves is passed on to it as SIGTERM,
    so the terminal closing drains in-flight requests like Ctrl-C does.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.HANDLED}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signum
        if signum not in (signal.SIGINT, signal.SIGTERM) and not self._owns(signal.SIGTERM):
            signal.raise_signal(signal.SIGTERM)  # to the server that drains on it
            return
        if self._task is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)

    def _owns(self, signum: int) -> bool:
        return bool(signal.getsignal(signum) == self._handle)

    def stop(self) -> None:
        """Stop as a signal would (through uvicorn's graceful shutdown while it serves)."""
        signal.raise_signal(signal.SIGTERM)

    def run(self, main: Coroutine[Any, Any, None]) -> None:
        """Run ``main`` to completion, or until a signal cancels it."""
        if self.received is not None:
            main.close()
            return
        run_event_loop(self._supervise(main))

    async def _supervise(self, main: Coroutine[Any, Any, None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._loop, self._task = asyncio.get_running_loop(), task
        try:
            await main
        except asyncio.CancelledError:
            if self.received is None:
                raise
            task.uncancel()  # asked for by a signal: a normal end
        finally:
            self._task = None
