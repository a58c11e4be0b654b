"""The mail relay ``billing-fleet dev`` starts when no SMTP relay is configured: an
aiosmtpd server on loopback that takes every mail and writes it, as sent, to a file.

The notification worker's SMTP channel sends to it like to any relay, so a developer
sees each receipt or dunning mail as ``<data dir>/mail/<time>-<n>.eml`` (any mail client
opens one); nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from fleet.embedded import EmbeddedUnavailable, Service, free_port

HOST = "127.0.0.1"


class _Writer:
    """aiosmtpd handler: each accepted message to its own file, written whole, then renamed
    (a reader never sees half a mail)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            number = next(self._numbers)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{stamp}-{number:05d}.eml"
        partial = path.with_suffix(".part")
        content: bytes = envelope.original_content or envelope.content
        partial.write_bytes(content)
        partial.rename(path)
        return "250 OK written to the dev mailbox"


class DevMailbox(Service):
    """``with DevMailbox(directory) as mailbox:`` a relay on ``HOST:mailbox.port``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port(HOST)
        self._controller: Any = None

    def start(self) -> Self:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # the `embedded` extra brings it
            raise EmbeddedUnavailable(
                "the dev mailbox needs aiosmtpd (pip install 'billing-fleet[embedded]'), "
                "or set BILLING_NOTIFICATION_SMTP_HOST to a relay"
            ) from exc
        self.directory.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(
            _Writer(self.directory), hostname=HOST, port=self.port, ready_timeout=5.0
        )
        try:
            self._controller.start()
        except Exception as exc:  # a port taken meanwhile, a server that did not start
            raise EmbeddedUnavailable(f"the dev mailbox did not start: {exc}") from exc
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
