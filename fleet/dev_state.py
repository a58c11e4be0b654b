"""``.billing-fleet/dev.json``: where a running ``billing-fleet dev`` serves, for a second terminal.

``dev`` writes the addresses it serves on (and the webhook secret, only when it generated
it) while it runs, mode 0600, and removes the file when it stops. ``dlt``, ``migrate`` and
``send-test-event`` fill every setting whose variable is unset from it, so they need no
setup next to ``dev``.

Liveness is an advisory lock (``flock``) on ``dev.lock`` that ``dev`` holds while it runs:
the kernel drops it when the process dies, however it dies, so a file left behind by a
killed ``dev`` is recognised as stale (a pid alone could have been reused since).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import SecretStr

from fleet.settings import DevSettings

S = TypeVar("S", bound=DevSettings)

STATE_FILE = "dev.json"
LOCK_FILE = "dev.lock"
# A command probing the lock holds it for microseconds; dev retries for that long.
LOCK_RETRY_SECONDS = 1.0


class DevAlreadyRunning(RuntimeError):
    """Another ``dev`` holds the lock of this data directory."""


@dataclass(frozen=True)
class DevState:
    pid: int
    kafka_bootstrap_servers: str
    database_url: str
    gateway_host: str
    gateway_port: int
    gateway_url: str
    stripe_webhook_secret: str | None = None
    """Only when ``dev`` generated it (a configured one is the operator's to hand out)."""

    def settings_update(self, settings: DevSettings) -> dict[str, Any]:
        """The settings this state supplies, of those ``settings`` has (a command reads
        only its own), that it did not get from a variable."""
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "database_url": self.database_url,
            "gateway_host": self.gateway_host,
            "gateway_port": self.gateway_port,
        }
        if self.stripe_webhook_secret is not None:
            values["stripe_webhook_secrets"] = [SecretStr(self.stripe_webhook_secret)]
        fields = type(settings).model_fields
        return {
            k: v for k, v in values.items() if k in fields and k not in settings.model_fields_set
        }


def _open_lock(data_dir: Path) -> IO[bytes]:
    return (data_dir / LOCK_FILE).open("ab")


def _try_lock(lock: IO[bytes]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def hold(data_dir: Path) -> Iterator[None]:
    """Hold this data directory's dev lock, or raise ``DevAlreadyRunning``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with _open_lock(data_dir) as lock:
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while not _try_lock(lock):
            if time.monotonic() > deadline:
                running = read(data_dir)
                who = f" (pid {running.pid})" if running is not None else ""
                raise DevAlreadyRunning(
                    f"another billing-fleet dev{who} runs on {data_dir} (BILLING_DEV_DATA_DIR)"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            (data_dir / STATE_FILE).unlink(missing_ok=True)


def publish(data_dir: Path, state: DevState) -> None:
    """Write ``state`` for other commands (call while holding the lock)."""
    path = data_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    # Created 0600 from the start: it may hold a secret and a database password.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(state), out, indent=2)
    temporary.replace(path)  # readers see the whole file or none


def read(data_dir: Path) -> DevState | None:
    """The state of the ``dev`` running on ``data_dir``; None when none runs (or the file
    is a stale one of a ``dev`` that was killed)."""
    try:
        data = json.loads((data_dir / STATE_FILE).read_text())
        state = DevState(**data)
    except (OSError, ValueError, TypeError):
        return None
    try:
        with _open_lock(data_dir) as lock:
            if _try_lock(lock):  # nobody holds it: that dev is gone
                return None
    except OSError:
        return None
    return state


def fill_from_dev(settings: S) -> S:
    """``settings`` with what a running ``dev`` supplies for the variables left unset."""
    state = read(settings.dev_data_dir)
    if state is None:
        return settings
    return settings.model_copy(update=state.settings_update(settings))
