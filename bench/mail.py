"""Mail deliveries benchmark (the second half of ``bench deliveries``): mails/s through the
dispatcher over the SMTP channel against raw aiosmtplib.

A local aiosmtpd server (its own process, the ``Sink`` handler: every mail accepted and
dropped) receives N mails, the same messages each time (a receipt notice of about 2 KB,
text and HTML, its Message-ID from its key, one recipient each), at the same concurrency,
from (a) raw aiosmtplib: a fixed number of coroutines, each keeping one connection and
calling ``sendmail`` per mail; and (b) the worker runtime's ``Dispatcher`` over
``SmtpSender`` (connections reused), on rows written beforehand to a fresh database,
claims and recorded results included, timed from its start to the last row's
``sent_at``; all its slots go to the one relay (``per_destination`` = the concurrency).
(a) and (b) alternate for several rounds; the ratio is the median of the rounds' b/a.
Then (c): (b) with one connection per mail (``max_messages_per_connection=1``: connect,
EHLO, the mail, QUIT), the other way the channel could work, measured to choose; and (d):
(b) over the default number of connections (``BILLING_NOTIFICATION_SMTP_CONNECTIONS``,
the relay's cap however many recipients), what a worker sends with the defaults.
"""

from __future__ import annotations

import asyncio
import email.policy
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from bench import procs
from bench.deliveries import TARGET_RATIO, timed_dispatch, write_rows
from fleet.embedded import free_port
from workers.notification.settings import NotificationSettings
from workers.runtime.deliveries.mail import message_id_for
from workers.runtime.deliveries.model import Delivery, RetryPolicy
from workers.runtime.deliveries.smtp import SmtpSender

DEFAULT_CONNECTIONS: int = NotificationSettings.model_fields[
    "notification_smtp_connections"
].default

DOMAIN = "billing.example.com"
SENDER = f"billing@{DOMAIN}"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class MailFigures:
    raws: list[float]
    dispatches: list[float]
    per_mail_connection: float
    default_cap: float


def mails(prefix: str, count: int) -> list[Delivery]:
    """``count`` mail deliveries as the notification worker builds them."""
    built = []
    for i in range(count):
        key = f"{prefix}-{i}"
        to = f"customer{i}@example.com"
        msg = EmailMessage()
        msg["From"] = f"Billing <{SENDER}>"
        msg["To"] = to
        msg["Subject"] = f"Your receipt R-{i:06d}"
        msg["Message-ID"] = message_id_for(key, DOMAIN)
        text = f"Hello,\n\nthank you for your payment of 19.99 EUR (receipt R-{i:06d}).\n" * 8
        msg.set_content(text)
        msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
        payload = msg.as_bytes(policy=email.policy.SMTP)
        built.append(Delivery("smtp", to, key, payload, metadata={"envelope_from": SENDER}))
    return built


def relay_server(stack: ExitStack, workdir: Path) -> int:
    """An aiosmtpd Sink relay in its own process; its port once it greets."""
    port = free_port()
    log = workdir / "smtp.log"
    command = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{HOST}:{port}"]
    server = stack.enter_context(
        procs.running([*command, "-c", "aiosmtpd.handlers.Sink"], log_path=log)
    )
    wait_greeting(port, server, log)
    return port


def wait_greeting(
    port: int, server: subprocess.Popen[bytes], log: Path, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"aiosmtpd exited with {server.returncode}:\n{procs.log_tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                greeting = sock.recv(512)
            if greeting.startswith(b"220"):
                return
            last = repr(greeting)
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"aiosmtpd not greeting within {timeout}s ({last})")


async def raw_smtp(port: int, batch: Sequence[Delivery], concurrency: int) -> float:
    """(a): mails/s of ``batch`` from ``concurrency`` coroutines, one connection each."""
    queue = iter(batch)

    async def sender() -> None:
        smtp = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, local_hostname="bench")
        await smtp.connect()
        try:
            for delivery in queue:
                await smtp.sendmail(SENDER, [delivery.destination], delivery.payload)
        finally:
            await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return len(batch) / (time.perf_counter() - start)


async def dispatched_mail(
    database_url: str,
    worker: str,
    port: int,
    count: int,
    concurrency: int,
    timeout: float,
    messages_per_connection: int = 100,
    connections: int | None = None,
) -> float:
    """(b)/(c)/(d): mails/s through a dispatcher over the SMTP channel, ``connections``
    to the relay (the concurrency unless given)."""
    await write_rows(database_url, worker, mails(worker, count))
    sender = SmtpSender(
        HOST,
        port,
        policy=RetryPolicy((1.0, 5.0), 10),
        max_connections=connections or concurrency,
        max_messages_per_connection=messages_per_connection,
        local_hostname="bench",
    )
    rate, _ = await timed_dispatch(
        database_url,
        worker,
        {"smtp": sender},
        count,
        concurrency=concurrency,
        per_destination=concurrency,
        timeout=timeout,
    )
    return rate


async def measure(
    database_url: str, port: int, *, count: int, concurrency: int, rounds: int, timeout: float
) -> MailFigures:
    raws: list[float] = []
    dispatches: list[float] = []
    for round_ in range(rounds):
        raws.append(await raw_smtp(port, mails(f"raw-{round_}", count), concurrency))
        dispatches.append(
            await dispatched_mail(database_url, f"mail-{round_}", port, count, concurrency, timeout)
        )
    single = await dispatched_mail(
        database_url, "mail-single", port, count, concurrency, timeout, messages_per_connection=1
    )
    capped = await dispatched_mail(
        database_url,
        "mail-capped",
        port,
        count,
        concurrency,
        timeout,
        connections=DEFAULT_CONNECTIONS,
    )
    return MailFigures(raws, dispatches, single, capped)


def report(figures: MailFigures, count: int, concurrency: int) -> None:
    raws, dispatches = figures.raws, figures.dispatches
    ratios = [b / a for a, b in zip(raws, dispatches, strict=True)]
    ratio = statistics.median(ratios)

    def cells(values: Sequence[float], fmt: str) -> str:
        return "".join(f"{v:{fmt}}" for v in values)

    width = 7 * len(raws)
    print(f"{'mails/s':<52}{'per round':<{width}}   best")
    print(
        f"{'(a) raw aiosmtplib, same mails and concurrency':<52}"
        f"{cells(raws, '7,.0f')}   {max(raws):,.0f}"
    )
    print(
        f"{'(b) dispatcher over the SMTP channel':<52}"
        f"{cells(dispatches, '7,.0f')}   {max(dispatches):,.0f}"
    )
    print(f"{'b / a':<52}{cells(ratios, '7.2f')}   {max(ratios):.2f}")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"b / a = median of the rounds' ratios = {ratio:.2f}    target >= {TARGET_RATIO}: {verdict}"
    )
    typical = statistics.median(dispatches)
    print(
        f"(c) dispatcher, one connection per mail ({count:,} mails, {concurrency} at once): "
        f"{figures.per_mail_connection:,.0f} mails/s; reusing connections (b) is "
        f"{typical / figures.per_mail_connection:.1f}x that"
    )
    print(
        f"(d) dispatcher over the default {DEFAULT_CONNECTIONS} connections to the relay "
        f"({count:,} mails, "
        f"{count:,} recipients, one relay): {figures.default_cap:,.0f} mails/s"
    )
