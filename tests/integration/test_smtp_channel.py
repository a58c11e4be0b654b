"""The SMTP channel against a real aiosmtpd server on loopback, through the real dispatcher
and PostgreSQL where rows are involved."""

from __future__ import annotations

import asyncio
import email.policy
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.cli_support import clean_env, run
from tests.deliveries_support import attempts, dispatching, dispatching_channels, rows, write
from tests.runtime_toy import metric, unique, wait_for
from tests.smtp_server import HANG, MailServer
from tests.tls_certs import Pki, make_pki
from workers.runtime.deliveries.mail import message_id_for
from workers.runtime.deliveries.model import Delivery, RetryPolicy
from workers.runtime.deliveries.smtp import SmtpSecurity, SmtpSender

pytestmark = pytest.mark.integration

DOMAIN = "billing.example.com"


@pytest.fixture
def relay() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("smtp-pki"))


def channel(
    server: MailServer,
    *,
    backoff: tuple[float, ...] = (0.1, 0.2),
    attempts: int = 50,
    timeout: float = 5.0,
    **options: Any,
) -> SmtpSender:
    return SmtpSender(
        "127.0.0.1",
        server.port,
        policy=RetryPolicy(backoff, attempts),
        timeout_seconds=timeout,
        local_hostname="billing-fleet.test",
        **options,
    )


def mail(key: str, to: str, *, with_id: bool = True, subject: str = "Your receipt") -> Delivery:
    """A mail delivery as the notification worker builds one: the whole message."""
    msg = EmailMessage()
    msg["From"] = f"Billing <billing@{DOMAIN}>"
    msg["To"] = to
    msg["Subject"] = subject
    if with_id:
        msg["Message-ID"] = message_id_for(key, DOMAIN)
    msg.set_content(f"Hello {to},\n\n.\nYour receipt for 19.99 EUR is attached.\n")
    msg.add_attachment(b"%PDF-1.7 fake", maintype="application", subtype="pdf", filename="r.pdf")
    payload = msg.as_bytes(policy=email.policy.SMTP)
    return Delivery("smtp", to, key, payload, metadata={"envelope_from": f"bounces@{DOMAIN}"})


def recipients(prefix: str, count: int) -> list[str]:
    return [f"{prefix}.{i}@example.com" for i in range(count)]


async def test_a_mail_arrives_whole_with_its_message_id(
    database_url: str, relay: MailServer
) -> None:
    worker = unique("smtp-whole")
    built, bare = mail("m-1", "jane.doe@example.com"), mail("m-2", "bob@example.org", with_id=False)
    await write(database_url, worker, [built, bare])
    async with dispatching(database_url, worker, channel(relay), channel="smtp"):
        await wait_for(lambda: _sent(database_url, worker, 2), message="both mails sent")
    by_to = {r.rcpt_tos[0]: r for r in relay.received}
    assert sorted(by_to) == ["bob@example.org", "jane.doe@example.com"]
    jane = by_to["jane.doe@example.com"]
    assert jane.mail_from == f"bounces@{DOMAIN}"
    # Byte for byte what the worker built (the server hands back CRLF lines, dots unstuffed).
    assert jane.content == built.payload
    assert jane.message["Message-ID"] == message_id_for("m-1", DOMAIN)
    assert jane.message["Subject"] == "Your receipt" and not jane.tls
    parts = list(jane.message.iter_parts())
    assert (
        parts[0].get_content().replace("\r\n", "\n")
        == "Hello jane.doe@example.com,\n\n.\nYour receipt for 19.99 EUR is attached.\n"
    )
    assert parts[1].get_content() == b"%PDF-1.7 fake"
    # Built without one: the key's, under the envelope sender's domain; nothing else changed.
    bob = by_to["bob@example.org"]
    assert bob.message["Message-ID"] == message_id_for("m-2", DOMAIN)
    assert bob.content.endswith(bare.payload.split(b"\r\n\r\n", 1)[1])
    assert {r["last_code"] for r in await rows(database_url, worker)} == {"250"}


async def test_a_refused_recipient_fails_once_and_is_never_retried(
    database_url: str, relay: MailServer
) -> None:
    worker = unique("smtp-refused")
    relay.recorder.rcpt_answers["gone@example.com"] = "550 5.1.1 <gone@example.com>: no mailbox"
    relay.recorder.data_answers["spam@example.com"] = "554 5.7.1 Message refused as spam"
    await write(
        database_url,
        worker,
        [mail("r-gone", "gone@example.com"), mail("r-spam", "spam@example.com")],
    )
    async with dispatching(database_url, worker, channel(relay, backoff=(0.05,)), channel="smtp"):
        await wait_for(lambda: _settled(database_url, worker, 2), message="both refused")
        # A later mail goes through after several polls: the refused had every chance to be
        # retried, and were not.
        await asyncio.sleep(0.5)
        await write(database_url, worker, [mail("r-ok", "fine@example.com")])
        await wait_for(lambda: _arrived(relay, "fine@example.com"), message="a later mail")
    found = {r["idempotency_key"]: r for r in await rows(database_url, worker)}
    assert {k: (r["status"], r["attempts"], r["last_code"]) for k, r in found.items()} == {
        "r-gone": ("failed", 1, "550"),
        "r-spam": ("failed", 1, "554"),
        "r-ok": ("sent", 1, "250"),
    }
    assert relay.recorder.rcpts["gone@example.com"] == 1
    assert relay.recorder.rcpts["spam@example.com"] == 1
    assert relay.recorder.arrived("spam@example.com") == 0
    # The reply named the recipient: recorded masked, in the attempt and the row.
    gone = found["r-gone"]
    assert gone["last_detail"] == "RCPT 550 5.1.1 <g***@e***.com>: no mailbox"
    assert [(a["outcome"], a["code"]) for a in await attempts(database_url, gone["id"])] == [
        ("failed", "550")
    ]
    listed = run("deliveries", "list", "--worker", worker, env=clean_env(DATABASE_URL=database_url))
    assert listed.returncode == 0, listed.stderr
    assert "g***@e***.com" in listed.stdout and "s***@e***.com" in listed.stdout
    assert "@example.com" not in listed.stdout


async def test_4xx_and_a_relay_down_are_retried_until_it_delivers(database_url: str) -> None:
    worker = unique("smtp-down")
    relay = MailServer()  # not started: connection refused
    to = recipients("later", 3)
    await write(database_url, worker, [mail(f"d-{i}", address) for i, address in enumerate(to)])
    try:
        async with dispatching(
            database_url, worker, channel(relay, backoff=(0.2, 0.3)), channel="smtp"
        ):
            await wait_for(
                lambda: _outcomes(database_url, worker, "retry", 1), message="refused recorded"
            )
            relay.recorder.rcpt_answers[to[0]] = "451 4.3.0 Try again later"
            relay.recorder.data_answers[to[1]] = "452 4.3.1 Insufficient storage"
            relay.start()
            await wait_for(lambda: _arrived(relay, to[2]), message="the relay is back")
            await wait_for(
                lambda: _codes(database_url, worker, {"451", "452"}), message="4xx recorded"
            )
            relay.recorder.rcpt_answers.clear()
            relay.recorder.data_answers.clear()
            await wait_for(lambda: _sent(database_url, worker, 3), message="all delivered")
        assert [relay.recorder.arrived(address) for address in to] == [1, 1, 1]  # none twice
        details = [
            a["detail"] or ""
            for r in await rows(database_url, worker)
            for a in await attempts(database_url, r["id"])
            if a["outcome"] == "retry"
        ]
        assert any("SMTPConnectError" in d for d in details), details
        assert any(d.startswith("RCPT 451") for d in details), details
        assert any(d.startswith("DATA 452") for d in details), details
        dead = metric("billing_deliveries_total", worker=worker, channel="smtp", outcome="dead")
        assert dead == 0
    finally:
        relay.stop()


async def test_a_relay_outage_pushes_back_all_its_rows(database_url: str) -> None:
    worker = unique("smtp-outage")
    relay = MailServer()  # never started
    await write(
        database_url, worker, [mail(f"o-{i}", a) for i, a in enumerate(recipients("o", 10))]
    )
    sender = channel(relay, backoff=(60.0,), max_connections=2)
    async with dispatching(database_url, worker, sender, channel="smtp", concurrency=8):
        await wait_for(lambda: _outcomes(database_url, worker, "retry", 2), message="2 refused")
        found = await rows(database_url, worker)
        # Ten recipients, one relay: two sends at once, and their retries pushed the other
        # eight (never tried) back by the wait, as one destination's would be.
        assert sorted(r["attempts"] for r in found) == [0] * 8 + [1, 1]
        assert all(r["status"] == "pending" and r["later"] for r in found), found


async def test_the_send_cap_is_per_relay_not_per_recipient(database_url: str) -> None:
    worker = unique("smtp-cap")
    stuck, healthy = MailServer(), MailServer()
    stuck.recorder.data_answers.update({a: HANG for a in recipients("stuck", 12)})
    stuck.start()
    healthy.start()
    # The stuck relay's backlog comes first in due order; every row has its own recipient.
    await write(
        database_url,
        worker,
        [
            Delivery("mail_a", m.destination, m.idempotency_key, m.payload)
            for m in (mail(f"a-{i}", a) for i, a in enumerate(recipients("stuck", 12)))
        ],
    )
    await write(
        database_url,
        worker,
        [
            Delivery("mail_b", m.destination, m.idempotency_key, m.payload)
            for m in (mail(f"b-{i}", a) for i, a in enumerate(recipients("ok", 12)))
        ],
    )
    # Two connections each, the relay's cap; the per-destination share (1) sizes endpoints.
    senders = {
        "mail_a": channel(stuck, timeout=30.0, max_connections=2),
        "mail_b": channel(healthy, max_connections=2),
    }
    try:
        async with dispatching_channels(
            database_url, worker, senders, concurrency=8, per_destination=1
        ) as dispatcher:
            await wait_for(
                lambda: _arrived_all(healthy, recipients("ok", 12)), message="B delivered"
            )
            # Meanwhile the stuck relay held two sessions, not one per recipient.
            assert stuck.recorder.sessions_opened == 2
            assert sum(stuck.recorder.rcpts.values()) == 2
            assert healthy.recorder.most_sessions_open <= 2
            assert healthy.recorder.sessions_opened <= 2  # its connections were reused
            dispatcher.drain_until(asyncio.get_running_loop().time())  # cut the stuck off
    finally:
        stuck.stop()
        healthy.stop()


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_starttls_and_implicit_tls_with_a_verified_certificate(
    pki: Pki, security: SmtpSecurity
) -> None:
    relay = MailServer(tls=security, pki=pki)
    relay.start()
    sender = channel(relay, security=security, cafile=str(pki.ca))
    try:
        result = await sender.send(mail("t-1", "jane.doe@example.com"))
        assert (result.outcome, result.code) == ("sent", "250")
        (received,) = relay.received
        assert received.tls
        assert received.message["Message-ID"] == message_id_for("t-1", DOMAIN)
    finally:
        await sender.aclose()
        relay.stop()


async def test_an_untrusted_relay_certificate_is_an_outage(pki: Pki) -> None:
    relay = MailServer(tls="tls", pki=pki)
    relay.start()
    sender = channel(relay, security="tls")  # the system's CAs: the test CA is not among them
    try:
        result = await sender.send(mail("u-1", "jane.doe@example.com"))
        assert result.outcome == "retry"
        assert "CERTIFICATE_VERIFY_FAILED" in (result.detail or ""), result
        assert relay.received == []
    finally:
        await sender.aclose()
        relay.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_over_starttls(pki: Pki, mechanism: str) -> None:
    relay = MailServer(tls="starttls", pki=pki, login=("fleet", "s3cret"), mechanisms=(mechanism,))
    relay.start()
    good = channel(
        relay, security="starttls", cafile=str(pki.ca), username="fleet", password="s3cret"
    )
    bad = channel(relay, security="starttls", cafile=str(pki.ca), username="fleet", password="nope")
    try:
        sent = await good.send(mail("a-1", "jane.doe@example.com"))
        assert (sent.outcome, sent.code) == ("sent", "250")
        # Bad credentials refuse every mail alike: retried (an outage), not failed.
        refused = await bad.send(mail("a-2", "bob@example.com"))
        assert (refused.outcome, refused.code) == ("retry", "535")
        assert [r.rcpt_tos for r in relay.received] == [["jane.doe@example.com"]]
        assert relay.recorder.logins == [(mechanism, "fleet"), (mechanism, "fleet")]
    finally:
        await good.aclose()
        await bad.aclose()
        relay.stop()


async def test_connections_are_reused_and_replaced_when_the_relay_dropped_them(
    relay: MailServer,
) -> None:
    pooled = channel(relay)
    try:
        for i in range(5):
            assert (await pooled.send(mail(f"p-{i}", f"p{i}@example.com"))).outcome == "sent"
        assert relay.recorder.sessions_opened == 1
        # The relay restarts: the idle connection is closed under the sender, which sees
        # that before the transaction and sends on a new one.
        relay.stop()
        relay.start()
        assert (await pooled.send(mail("p-5", "p5@example.com"))).outcome == "sent"
        assert relay.recorder.arrived("p5@example.com") == 1
    finally:
        await pooled.aclose()
    per_send = channel(relay, max_messages_per_connection=2)
    opened = relay.recorder.sessions_opened
    try:
        for i in range(5):
            assert (await per_send.send(mail(f"q-{i}", f"q{i}@example.com"))).outcome == "sent"
    finally:
        await per_send.aclose()
    assert relay.recorder.sessions_opened - opened == 3  # 2 + 2 + 1 mails


async def test_a_relay_that_never_answers_is_retried_within_the_timeout(
    relay: MailServer,
) -> None:
    relay.recorder.rcpt_answers["slow@example.com"] = HANG
    sender = channel(relay, timeout=0.5)
    try:
        result = await sender.send(mail("h-1", "slow@example.com"))
        assert (result.outcome, result.detail) == ("retry", "no answer within 0.5 s")
        # The connection it abandoned is not reused: the next mail goes through.
        assert (await sender.send(mail("h-2", "fine@example.com"))).outcome == "sent"
    finally:
        await sender.aclose()


async def test_a_delivery_that_is_no_mail_fails_without_a_session(relay: MailServer) -> None:
    sender = channel(relay)
    try:
        headerless = Delivery("smtp", "jane@example.com", "x-1", b"no headers here")
        result = await sender.send(headerless)
        assert (result.outcome, result.detail) == ("failed", "the payload has no message headers")
        assert relay.recorder.sessions_opened == 0
    finally:
        await sender.aclose()


async def _sent(database_url: str, worker: str, count: int) -> bool:
    found = await rows(database_url, worker)
    return len(found) == count and {r["status"] for r in found} == {"sent"}


async def _settled(database_url: str, worker: str, count: int) -> bool:
    found = await rows(database_url, worker)
    return len(found) == count and "pending" not in {r["status"] for r in found}


async def _arrived(server: MailServer, recipient: str) -> bool:
    return server.recorder.arrived(recipient) >= 1


async def _arrived_all(server: MailServer, to: list[str]) -> bool:
    return all(server.recorder.arrived(address) for address in to)


async def _outcomes(database_url: str, worker: str, outcome: str, count: int) -> bool:
    found = 0
    for row in await rows(database_url, worker):
        found += sum(a["outcome"] == outcome for a in await attempts(database_url, row["id"]))
    return found >= count


@pytest.mark.parametrize("share", [1, 6])
async def test_a_relay_gets_as_many_sends_as_its_connections_whatever_the_share(
    database_url: str, share: int
) -> None:
    """Sends beyond the channel's connections would wait for one inside their own timeout
    (and time out behind a slow relay): the dispatcher starts only as many as it has, and
    the per-destination share, for HTTP endpoints, neither raises nor lowers that."""
    worker = unique("smtp-conns")
    slow = MailServer()
    slow.recorder.on_accepted = lambda received: time.sleep(0.2)
    slow.start()
    await write(
        database_url, worker, [mail(f"c-{i}", a) for i, a in enumerate(recipients("c", 10))]
    )
    most = 0
    try:
        async with dispatching(
            database_url,
            worker,
            # The server's one loop takes the mails in turn: three in flight take 0.6 s.
            channel(slow, timeout=1.5, max_connections=3),
            channel="smtp",
            concurrency=8,
            per_destination=share,
        ) as dispatcher:

            async def all_sent() -> bool:
                nonlocal most
                most = max(most, dispatcher.in_flight)
                sent = [r for r in await rows(database_url, worker) if r["status"] == "sent"]
                return len(sent) == 10

            await wait_for(all_sent, message="all ten sent", interval=0.02)
        assert most == 3 and slow.recorder.most_sessions_open <= 3
        # Each sent at its first attempt: none waited past its timeout for a connection.
        assert all(r["attempts"] == 1 for r in await rows(database_url, worker))
    finally:
        slow.stop()


async def _codes(database_url: str, worker: str, codes: set[str]) -> bool:
    seen: set[str] = set()
    for row in await rows(database_url, worker):
        seen.update(a["code"] for a in await attempts(database_url, row["id"]) if a["code"])
    return codes <= seen


async def test_a_drain_gives_the_queued_mails_back_and_starts_none(database_url: str) -> None:
    """The relay's rows claimed ahead wait in the dispatcher's queue; on a stop they go
    back to the table (due now, their attempt not counted) and none is started, while
    the sends in flight finish and are recorded."""
    worker = unique("smtp-drain")
    slow = MailServer()
    slow.recorder.on_accepted = lambda received: time.sleep(0.3)  # each mail takes a while
    slow.start()
    await write(
        database_url, worker, [mail(f"d-{i}", a) for i, a in enumerate(recipients("d", 12))]
    )
    try:
        async with dispatching(
            database_url,
            worker,
            channel(slow, max_connections=2),
            channel="smtp",
            concurrency=8,
        ) as dispatcher:
            await wait_for(lambda: _in_flight(dispatcher, 2), message="two sends in flight")
            dispatcher.drain_until(asyncio.get_running_loop().time() + 5.0)
        found = await rows(database_url, worker)
        sent = [r for r in found if r["status"] == "sent"]
        assert len(sent) == 2 == len(slow.received)  # the two in flight, nothing started after
        rest = [r for r in found if r["status"] != "sent"]
        assert all(r["status"] == "pending" and r["attempts"] == 0 for r in rest), rest
        assert not any(r["later"] for r in rest)  # given back, due now: no lease to wait out
    finally:
        slow.stop()


async def _in_flight(dispatcher: Any, count: int) -> bool:
    return bool(dispatcher.in_flight >= count)
