"""A real aiosmtpd server on loopback standing for a mail relay (its controller runs it in a
thread of its own, with its own event loop).

The handler records every message that got ``250`` after ``DATA`` (envelope and bytes),
counts ``RCPT TO`` per recipient and the SMTP sessions open at once, and answers as told
per recipient: a reply at ``RCPT TO`` or at ``DATA`` (``"550 5.1.1 No such user"``), or
``HANG`` (never answer, until the server stops). ``on_accepted``, when set, is called
(in the server's thread) with each message recorded, before its ``250`` is written: a
test can crash the sender at the moment the relay holds a mail it was not told of yet.
``stop()`` ends the server and every session (connection refused afterwards);
``start()`` listens on the same port again.
Optional: a certificate (``Pki``) for STARTTLS or implicit TLS, and AUTH with one
user's password.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Final, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from fleet.embedded import free_port
from tests.tls_certs import Pki

HANG: Final = "hang"
TlsMode = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    """The session was encrypted (STARTTLS or implicit TLS)."""

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """The aiosmtpd handler; its hooks run in the server's thread, hence the lock."""

    rcpt_answers: dict[str, str] = field(default_factory=dict)
    data_answers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    rcpts: Counter[str] = field(default_factory=Counter)
    sessions_opened: int = 0
    sessions_open: int = 0
    most_sessions_open: int = 0
    logins: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, user)
    on_accepted: Callable[[Received], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arrived(self, recipient: str) -> int:
        with self.lock:
            return sum(recipient in r.rcpt_tos for r in self.received)

    def session_began(self) -> None:
        with self.lock:
            self.sessions_opened += 1
            self.sessions_open += 1
            self.most_sessions_open = max(self.most_sessions_open, self.sessions_open)

    def session_ended(self) -> None:
        with self.lock:
            self.sessions_open -= 1

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.lock:
            self.rcpts[address] += 1
            answer = self.rcpt_answers.get(address)
        if answer == HANG:
            await asyncio.sleep(3600)  # cancelled when the server stops
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            answers = [self.data_answers.get(r) for r in envelope.rcpt_tos]
        answer = next((a for a in answers if a), None)
        if answer == HANG:
            await asyncio.sleep(3600)
        if answer:
            return answer
        content = envelope.original_content or b""
        # Implicit TLS from the first byte, or STARTTLS (which replaced the transport).
        tls = server.transport is not None and server.transport.get_extra_info("sslcontext")
        received = Received(str(envelope.mail_from), list(envelope.rcpt_tos), content, bool(tls))
        with self.lock:
            self.received.append(received)
            accepted = self.on_accepted
        if accepted is not None:
            accepted(received)
        return "250 Message accepted"


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, telling the recorder when a client's session begins (its
    first EHLO or HELO: the controller's own start-up probe only reads the greeting) and
    when it ends."""

    def __init__(self, recorder: Recorder, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorder, self._counted = recorder, False

    def _count(self) -> None:
        if not self._counted:
            self._counted = True
            self._recorder.session_began()

    async def smtp_EHLO(self, hostname: str) -> None:
        self._count()
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        self._count()
        await super().smtp_HELO(hostname)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._recorder.session_ended()
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(recorder, **kwargs)
        self._recorder = recorder

    def factory(self) -> SMTP:
        return _CountingSMTP(self._recorder, self.handler, **self.SMTP_kwargs)


class MailServer:
    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        pki: Pki | None = None,
        login: tuple[str, str] | None = None,
        mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN"),
    ) -> None:
        self.port = free_port()
        self.recorder = Recorder()
        self._tls, self._pki, self._login, self._mechanisms = tls, pki, login, mechanisms
        self._controller: _Controller | None = None

    @property
    def received(self) -> list[Received]:
        with self.recorder.lock:
            return list(self.recorder.received)

    def start(self) -> None:
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port}
        if self._tls != "none":
            assert self._pki is not None, "TLS needs a certificate"
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._pki.server_cert, self._pki.server_key)
            if self._tls == "tls":
                kwargs["ssl_context"] = context
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        if self._login is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self._tls != "none",
                auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN") if m not in self._mechanisms],
            )
        self._controller = _Controller(self.recorder, **kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth: Any
    ) -> AuthResult:
        assert self._login is not None and isinstance(auth, LoginPassword)
        user, password = auth.login.decode(), auth.password.decode()
        with self.recorder.lock:
            self.recorder.logins.append((mechanism, user))
        # handled=False: aiosmtpd answers (235, or 535 on a refusal) itself.
        return AuthResult(success=(user, password) == self._login, handled=False)
