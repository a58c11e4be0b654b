"""The SMTP channel: hand each mail delivery to one relay (aiosmtplib), reusing connections.

A delivery's payload is the complete message the worker built, its destination the
recipient, its metadata may name the envelope sender (``mail.prepare``: the Message-ID is
the idempotency key's). One transaction per delivery: ``MAIL FROM``, ``RCPT TO`` (one
recipient), ``DATA``.

Outcomes. ``retry``: the relay refused or dropped the connection, or timed out; any 4xx
reply (421 closing, 450/451 try later, 452 out of storage); and every refusal before the
transaction, 5xx included (greeting, EHLO, STARTTLS, AUTH: 535 bad credentials, 530 auth
required), and a ``MAIL FROM`` 5xx other than 552/555 (our sender address refused). Those
refuse every mail alike: the relay's or our configuration's outage, not the recipient's
fault, so the rows wait (their backoff; ``billing-fleet deliveries retry`` after the
attempts) for an operator to fix it rather than each mail failing for good. ``failed``: a
5xx to ``RCPT TO`` (550 no such mailbox, 553 bad address, 554) or to ``DATA`` (554 content
refused, 552 too big), 552/555 to ``MAIL FROM`` (this message's size or parameters), and a
delivery that cannot be sent as built (no headers, no recipient or sender, an address the
relay cannot take as UTF-8).

Connections are reused (``bench deliveries``: several times the mails/s of one connection
per send): each concurrent send holds one, at most ``max_connections`` at once, returned
after a sent mail and closed after anything else (its state is not known then), after
``max_messages_per_connection`` mails (QUIT in the background) or when idle longer than
``idle_seconds``. A reused connection the relay closed meanwhile is replaced before the
transaction starts; nothing is sent twice for it.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Final, Literal

import aiosmtplib

from workers.runtime.deliveries.mail import InvalidMail, Mail, prepare
from workers.runtime.deliveries.model import DETAIL_CHARS, Delivery, RetryPolicy, SendResult

SmtpSecurity = Literal["none", "starttls", "tls"]
Step = Literal["connect", "mail", "rcpt", "data"]
# MAIL FROM refusals that are this message's, not our sender address's.
MESSAGE_MAIL_FROM_REFUSALS: Final = frozenset({552, 555})


@dataclass(slots=True)
class _Connection:
    smtp: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0
    step: Step = "connect"
    """The command of the transaction under way (what a refusal answered)."""


class SmtpSender:
    """Sends mail deliveries through one SMTP relay (the runtime's ``Sender`` protocol).

    ``security``: ``none`` (plain, never upgraded), ``starttls`` (upgrade required) or
    ``tls`` (implicit TLS, port 465); the relay's certificate is always verified, against
    ``cafile`` when given, else the system's CAs. ``username`` logs in (AUTH PLAIN or
    LOGIN, as the relay offers). Every send, a connection's set-up included, is bounded
    by ``timeout_seconds``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        policy: RetryPolicy,
        security: SmtpSecurity = "none",
        username: str | None = None,
        password: str | None = None,
        timeout_seconds: float = 10.0,
        cafile: str | None = None,
        max_connections: int = 4,
        max_messages_per_connection: int = 100,
        idle_seconds: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        if max_connections < 1 or max_messages_per_connection < 1:
            raise ValueError("max_connections and max_messages_per_connection must be >= 1")
        self._host, self._port, self._security = host, port, security
        self._username, self._password = username, password
        self._policy, self._timeout, self._idle_seconds = policy, timeout_seconds, idle_seconds
        self._max_messages = max_messages_per_connection
        self._local_hostname = local_hostname
        self._tls = ssl.create_default_context(cafile=cafile) if security != "none" else None
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []  # most recently used last: reused first
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:  # no password in a log or traceback
        return f"SmtpSender({self.limit_group}, security={self._security!r})"

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    @property
    def limit_group(self) -> str:
        """Every send goes through this one relay: the dispatcher's per-destination cap
        and an outage's push-back count against it, not against each recipient."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"smtp://{host.lower()}:{self._port}"

    @property
    def max_sends(self) -> int:
        return self._max_connections

    async def send(self, delivery: Delivery) -> SendResult:
        try:
            mail = prepare(
                delivery.destination, delivery.idempotency_key, delivery.payload, delivery.metadata
            )
        except InvalidMail as exc:
            return SendResult("failed", detail=str(exc))
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                return await self._send(mail)
        except TimeoutError:
            return SendResult("retry", detail=f"no answer within {self._timeout:g} s")

    async def _send(self, mail: Mail) -> SendResult:
        reused = True
        while True:
            connection = self._take_idle()
            if connection is None:
                reused = False
                try:
                    connection = await self._connect()
                except Exception as exc:
                    return _failure("connect", exc)
            keep = False
            try:
                if mail.utf8 and not connection.smtp.supports_extension("smtputf8"):
                    keep = True  # nothing of the transaction was sent
                    return SendResult("failed", detail="the relay has no SMTPUTF8")
                try:
                    await _transaction(connection, mail)
                except aiosmtplib.SMTPServerDisconnected:
                    if reused and connection.step == "mail":
                        continue  # the relay closed it while idle: nothing sent, a fresh one
                    raise
                keep = True
                connection.sent += 1
                return SendResult("sent", "250")
            except Exception as exc:
                return _failure(connection.step, exc)
            finally:
                self._give_back(connection, keep)

    def _take_idle(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.smtp.is_connected and now - connection.idle_since < self._idle_seconds:
                return connection
            connection.smtp.close()
        return None

    async def _connect(self) -> _Connection:
        smtp = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._security == "tls",
            start_tls=self._security == "starttls",
            tls_context=self._tls,
            username=self._username,
            password=self._password,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
        )
        await smtp.connect()
        # The FQDN aiosmtplib looked up once serves every later connection's EHLO.
        self._local_hostname = smtp.local_hostname
        return _Connection(smtp)

    def _give_back(self, connection: _Connection, keep: bool) -> None:
        if not keep or self._closed or not connection.smtp.is_connected:
            connection.smtp.close()
        elif connection.sent >= self._max_messages:
            task = asyncio.create_task(self._quit(connection.smtp))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        else:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        """QUIT, politely and bounded, off the send's path (its mail is sent already)."""
        try:
            async with asyncio.timeout(self._timeout):
                await smtp.quit()
        except Exception:  # the mail went out; a rude close is all that is left
            pass
        finally:
            smtp.close()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(c.smtp) for c in idle), *self._retiring)


async def _transaction(connection: _Connection, mail: Mail) -> None:
    smtp, encoding = connection.smtp, "utf-8" if mail.utf8 else "ascii"
    connection.step = "mail"
    await smtp.mail(mail.sender, options=["SMTPUTF8"] if mail.utf8 else [], encoding=encoding)
    connection.step = "rcpt"
    await smtp.rcpt(mail.recipient, encoding=encoding)
    connection.step = "data"
    await smtp.data(mail.message)
    connection.step = "connect"  # between transactions


def classify_reply(step: Step, code: int, text: str = "") -> SendResult:
    """A refusal's outcome: a 4xx (or anything not 5xx) is retried; a 5xx fails for good
    at ``rcpt`` and ``data``, and at ``mail`` when it is this message's (552 size, 555
    parameters); any other 5xx, before or at ``MAIL FROM``, is a configuration outage
    and retried (module docstring)."""
    detail = _detail(f"{step.upper()} {code} {text}")
    permanent = 500 <= code < 600 and (
        step in ("rcpt", "data") or (step == "mail" and code in MESSAGE_MAIL_FROM_REFUSALS)
    )
    return SendResult("failed" if permanent else "retry", str(code), detail)


_STEPS: Final[tuple[tuple[type[aiosmtplib.SMTPResponseException], Step], ...]] = (
    (aiosmtplib.SMTPSenderRefused, "mail"),
    (aiosmtplib.SMTPRecipientRefused, "rcpt"),
    (aiosmtplib.SMTPDataError, "data"),
)


def _failure(step: Step, exc: BaseException) -> SendResult:
    """The outcome of ``exc``, raised at ``step`` (connect: before ``MAIL FROM``)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        found = next((s for kind, s in _STEPS if isinstance(exc, kind)), None)
        return classify_reply(found or "connect", exc.code, exc.message)
    if isinstance(exc, ValueError) and step != "connect":
        # An address aiosmtplib will not put on a command line (CR, LF, not ASCII).
        return SendResult("failed", detail=_detail(f"{type(exc).__name__}: {exc}"))
    # Refused, reset, timed out, TLS refused, AUTH not offered: the relay's outage.
    return SendResult("retry", detail=_detail(f"{type(exc).__name__}: {exc}"))


def _detail(text: str) -> str:
    return " ".join(text.split())[:DETAIL_CHARS]
