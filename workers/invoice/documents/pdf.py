"""HTML to PDF with weasyprint, in a pool of processes beside the worker's event loop.

A receipt takes weasyprint some hundreds of milliseconds of pure CPU (layout is Python):
in a thread it would hold the GIL and stall the worker's consumer, relay and dispatcher
for as long, so it runs in ``processes`` spawned processes (spawned, not forked: the
worker's threads and sockets stay out of them; as with any spawned process, the main
module is imported again in each, so a script using this needs its
``if __name__ == "__main__"`` guard, as the ``billing-fleet`` entry point has). At most
that many renders are handed to the pool at once, so a render's time limit is its own,
not its wait behind others. The pool starts on the first render (spawning a process and
importing weasyprint there take about a second).

Bounded twice: the child stops a render at ``timeout_seconds`` (an interval timer raising
in weasyprint's Python code), and the parent gives up ``KILL_GRACE_SECONDS`` later,
for a child stuck where that cannot reach (a C call): then every process of the pool is
killed and a new pool started on the next render.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Final

KILL_GRACE_SECONDS: Final = 5.0
CLOSE_TIMEOUT_SECONDS: Final = 5.0
DATA_ONLY: Final = ("data",)
"""URL schemes weasyprint may fetch: embedded data only, never the network or files."""


class RenderFailed(Exception):
    """The HTML does not render (weasyprint refused it): rendering again will not help."""


class RenderUnavailable(Exception):
    """No PDF this time (the render's time limit, a render process that died): retry."""


class PdfRenderer:
    """``await render(html) -> bytes`` in a process pool created on first use."""

    def __init__(self, processes: int, timeout_seconds: float) -> None:
        self._processes, self._timeout = processes, timeout_seconds
        self._pool: ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(processes)

    @property
    def processes(self) -> int:
        return self._processes

    async def render(self, html: str) -> bytes:
        """The PDF of ``html``: ``RenderFailed`` when weasyprint refuses it,
        ``RenderUnavailable`` on the time limit or a dead render process."""
        async with self._slots:
            pool = self._pool or self._start()
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._timeout + KILL_GRACE_SECONDS):
                    return await loop.run_in_executor(pool, _render_pdf, html, self._timeout)
            except TimeoutError:
                self._kill(pool)
                raise RenderUnavailable(
                    f"the render process did not stop within {self._timeout:g} s; restarted"
                ) from None
            except BrokenProcessPool as exc:  # a child killed (out of memory, a signal)
                self._kill(pool)
                raise RenderUnavailable(f"a render process died: {exc}") from None

    async def aclose(self) -> None:
        """Stop the processes: a render still running gets ``CLOSE_TIMEOUT_SECONDS``."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        except TimeoutError:
            self._kill(pool)

    def _start(self) -> ProcessPoolExecutor:
        self._pool = ProcessPoolExecutor(
            self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_prepare_child,
        )
        return self._pool

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        # The executor cannot cancel a running call: end its processes instead.
        for process in list((pool._processes or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


class _RenderTimeout(RenderUnavailable):
    """The alarm: a retry also if it lands after weasyprint returned."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _RenderTimeout


def _prepare_child() -> None:
    """In each render process: Ctrl-C is the worker's to handle (the worker stops the
    pool), the alarm ends a render, and weasyprint is imported before the first one (its
    import takes longer than a render; when it fails, each render says why)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    with contextlib.suppress(Exception):
        import weasyprint  # noqa: F401


def _render_pdf(html: str, timeout_seconds: float) -> bytes:
    """In a render process: the PDF of ``html``. Its exceptions cross back pickled, so
    they are ours, carrying text only."""
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    except (ImportError, OSError) as exc:  # Pango or HarfBuzz missing: fix the image
        raise RenderUnavailable(f"weasyprint cannot start: {type(exc).__name__}: {exc}") from None

    signal.setitimer(signal.ITIMER_REAL, timeout_seconds)
    try:
        fetcher = URLFetcher(allowed_protocols=DATA_ONLY)
        pdf: bytes = HTML(string=html, url_fetcher=fetcher).write_pdf()
        return pdf
    except _RenderTimeout:
        raise RenderUnavailable(f"the render took longer than {timeout_seconds:g} s") from None
    except Exception as exc:
        raise RenderFailed(f"{type(exc).__name__}: {exc}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
