"""The SMTP channel without a server: Message-IDs, the envelope, reply classification."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from workers.runtime.deliveries.mail import InvalidMail, message_id_for, prepare
from workers.runtime.deliveries.model import RetryPolicy
from workers.runtime.deliveries.smtp import SmtpSender, Step, classify_reply

KEY = "notification:receipt:in_1Abc"


def _message(message_id: str | None = None, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Billing <billing@example.com>"
    msg["To"] = "jane.doe@example.com"
    msg["Subject"] = "Your receipt"
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Thank you.\n.\nA line that is only a dot, above.\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def _header(message: bytes, name: str) -> list[str]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return [str(value) for value in parsed.get_all(name, [])]


def test_message_id_is_stable_per_key_and_differs_between_keys() -> None:
    first = message_id_for(KEY, "example.com")
    assert first == message_id_for(KEY, "example.com")
    assert first != message_id_for(KEY + "x", "example.com")
    assert first.startswith("<") and first.endswith("@example.com>")
    assert len(first.split("@")[0]) == 1 + 32  # "<" and 128 bits of hex
    with pytest.raises(ValueError, match="not a mail domain"):
        message_id_for(KEY, "exa mple.com>")


def test_a_message_built_with_its_id_is_sent_byte_for_byte() -> None:
    payload = _message(message_id_for(KEY, "mail.example.com"))
    mail = prepare("jane.doe@example.com", KEY, payload, {})
    assert mail.message is payload
    assert (mail.sender, mail.recipient, mail.utf8) == (
        "billing@example.com",
        "jane.doe@example.com",
        False,
    )


def test_a_message_without_the_keys_id_gets_it() -> None:
    bare = prepare("jane.doe@example.com", KEY, _message(), {}).message
    assert _header(bare, "Message-ID") == [message_id_for(KEY, "example.com")]
    # Another id: replaced, its domain kept; the body and other headers untouched.
    foreign = _message("<random123@mx.example.org>")
    fixed = prepare("jane.doe@example.com", KEY, foreign, {}).message
    assert _header(fixed, "Message-ID") == [message_id_for(KEY, "mx.example.org")]
    assert fixed.split(b"\r\n\r\n", 1)[1] == foreign.split(b"\r\n\r\n", 1)[1]
    assert _header(fixed, "Subject") == ["Your receipt"]
    # Two ids: one, the key's, under the envelope sender's domain.
    twice = b"Message-ID: <b@example.org>\r\n" + _message("<a@example.org>")
    assert len(_header(twice, "Message-ID")) == 2
    once = prepare("jane.doe@example.com", KEY, twice, {}).message
    assert _header(once, "Message-ID") == [message_id_for(KEY, "example.com")]


def test_every_attempt_at_a_delivery_sends_the_same_message() -> None:
    payload = _message()
    sent = {prepare("jane.doe@example.com", KEY, payload, {}).message for _ in range(3)}
    assert len(sent) == 1


def test_headers_only_and_lf_messages_are_kept_well_formed() -> None:
    headers_only = b"From: a@example.com\nSubject: hi"
    fixed = prepare("b@example.com", KEY, headers_only, {}).message
    assert fixed == (
        b"Message-ID: " + message_id_for(KEY, "example.com").encode() + b"\n"
        b"From: a@example.com\nSubject: hi\n"
    )
    lf = b"From: a@example.com\nSubject: hi\n\nbody\n"
    assert prepare("b@example.com", KEY, lf, {}).message.endswith(b"Subject: hi\n\nbody\n")


def test_the_envelope_sender_comes_from_metadata_else_sender_else_from() -> None:
    payload = _message(Sender="bounces@example.net")
    assert prepare("j@example.com", KEY, payload, {}).sender == "bounces@example.net"
    given = {"envelope_from": "Bounces <bounce+123@example.org>"}
    assert prepare("j@example.com", KEY, payload, given).sender == "bounce+123@example.org"
    utf8 = prepare("jöran@exämple.de", KEY, _message(), {})
    assert utf8.utf8 and utf8.recipient == "jöran@exämple.de"


@pytest.mark.parametrize(
    ("destination", "payload", "metadata", "why"),
    [
        ("jane.doe", _message(), {}, "not a mail address"),
        ("jane@example.com", b"just text, no headers\n\nbody", {}, "no message headers"),
        ("jane@example.com", b"Subject: hi\r\n\r\nbody", {}, "no envelope sender"),
        ("jane@example.com", _message(), {"envelope_from": 7}, "not text"),
    ],
)
def test_a_mail_that_cannot_be_sent_as_built_is_refused(
    destination: str, payload: bytes, metadata: dict[str, object], why: str
) -> None:
    with pytest.raises(InvalidMail, match=why):
        prepare(destination, KEY, payload, metadata)


@pytest.mark.parametrize(
    ("step", "code", "outcome"),
    [
        ("connect", 421, "retry"),
        ("connect", 554, "retry"),  # greeting refused: the relay's outage
        ("connect", 535, "retry"),  # bad credentials: our configuration, not the mail
        ("connect", 530, "retry"),
        ("mail", 451, "retry"),
        ("mail", 550, "retry"),  # our sender address refused
        ("mail", 553, "retry"),
        ("mail", 552, "failed"),  # this message is too big
        ("mail", 555, "failed"),
        ("rcpt", 450, "retry"),
        ("rcpt", 451, "retry"),
        ("rcpt", 452, "retry"),
        ("rcpt", 550, "failed"),
        ("rcpt", 553, "failed"),
        ("rcpt", 554, "failed"),
        ("data", 451, "retry"),
        ("data", 552, "failed"),
        ("data", 554, "failed"),
    ],
)
def test_reply_classification(step: Step, code: int, outcome: str) -> None:
    result = classify_reply(step, code, "5.1.1 some\n text")
    assert (result.outcome, result.code) == (outcome, str(code))
    assert result.detail == f"{step.upper()} {code} 5.1.1 some text"


async def test_the_channel_counts_against_its_relay_and_shows_no_password() -> None:
    sender = SmtpSender(
        "Relay.Example.com", 587, policy=RetryPolicy((1.0,), 3), username="u", password="s3cr3t!"
    )
    try:
        assert sender.limit_group == "smtp://relay.example.com:587"
        assert "s3cr3t" not in repr(sender)
        assert SmtpSender("::1", 25, policy=RetryPolicy((1.0,), 3)).limit_group == "smtp://[::1]:25"
    finally:
        await sender.aclose()
