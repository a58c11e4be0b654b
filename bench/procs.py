"""Servers under test as child processes that never outlive the benchmark."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from fleet.embedded import die_with_parent_hook, stop_process_group


@contextlib.contextmanager
def running(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[bytes] = subprocess.DEVNULL,
    stdout: int | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running in its own session (a terminal's Ctrl-C reaches only us; we
    stop it), output to ``log_path`` (a pipe nobody reads would block it); ``stdin`` and
    ``stdout`` (e.g. ``subprocess.PIPE``, stderr still to the log) connect two of them."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=dict(env) if env is not None else None,
            stdin=stdin,
            stdout=log if stdout is None else stdout,
            stderr=subprocess.STDOUT if stdout is None else log,
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
        try:
            yield process
        finally:
            stop_process_group(process, timeout=5.0)


def log_tail(path: Path, limit: int = 3000) -> str:
    return path.read_bytes()[-limit:].decode(errors="replace")


def wait_http_ok(
    request: urllib.request.Request,
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float = 20.0,
) -> bytes:
    """Repeat ``request`` until it answers 2xx (a server starting, a broker connecting)."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"{request.full_url} not OK within {timeout}s ({last}):\n{log_tail(log_path)}"
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
