"""The dev mailbox: the relay ``billing-fleet dev`` starts when none is configured, fed by
the notification worker's real SMTP channel, each mail written to a file as sent."""

from __future__ import annotations

import email
import email.policy
from contextlib import ExitStack
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from fleet.command_settings import dev_settings_class
from fleet.dev import _with_mailbox
from fleet.dev_mailbox import HOST, DevMailbox
from workers.notification.mail import MailIdentity, compose
from workers.runtime.deliveries.mail import message_id_for
from workers.runtime.deliveries.model import Delivery, RetryPolicy
from workers.runtime.deliveries.smtp import SmtpSender

pytestmark = pytest.mark.integration

IDENTITY = MailIdentity("billing@acme.test", "Acme", None, None)


def receipt_mail(key: str, to: str) -> Delivery:
    payload = compose(
        identity=IDENTITY,
        to_address=to,
        to_name="Jane",
        subject=f"Your receipt {key}",
        text=f"Receipt {key}: $9.00",
        html=f"<p>Receipt {key}: $9.00</p>",
        idempotency_key=key,
        optional=False,
        date=datetime(2026, 12, 2, tzinfo=UTC),
    )
    return Delivery("email", to, key, payload)


async def test_every_mail_the_smtp_channel_sends_is_one_file_as_sent(tmp_path: Path) -> None:
    mails = [receipt_mail(f"receipt:R-{i}:cus_{i}", f"jane{i}@example.test") for i in range(3)]
    with DevMailbox(tmp_path / "mail") as mailbox:
        sender = SmtpSender(HOST, mailbox.port, policy=RetryPolicy((1.0,), 2))
        try:
            results = [await sender.send(mail) for mail in mails]
        finally:
            await sender.aclose()
    assert [r.outcome for r in results] == ["sent"] * 3
    files = sorted((tmp_path / "mail").iterdir())
    assert [f.suffix for f in files] == [".eml"] * 3  # no partial file left
    for path, mail in zip(files, mails, strict=True):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        assert message["To"] == f"Jane <{mail.destination}>"
        assert message["Message-ID"] == message_id_for(mail.idempotency_key, "acme.test")
        assert message.get_body(("plain",)).get_content().strip().endswith("$9.00")  # type: ignore[union-attr]


def test_dev_starts_the_mailbox_when_no_relay_is_configured(tmp_path: Path) -> None:
    settings_class = dev_settings_class()
    tuning: dict[str, Any] = {
        "notification_smtp_timeout_seconds": 3.0,
        "notification_smtp_connections": 2,
    }
    with ExitStack() as started:
        settings, mailbox = _with_mailbox(settings_class(dev_data_dir=tmp_path, **tuning), started)
        assert mailbox is not None and mailbox.directory == tmp_path / "mail"
        relay = settings.model_dump(include={"notification_smtp_host", "notification_smtp_port"})
        assert relay == {"notification_smtp_host": HOST, "notification_smtp_port": mailbox.port}


@pytest.mark.parametrize(
    "relay",
    [
        {"notification_smtp_host": "mail.internal"},
        {"notification_smtp_port": 2525},
        {"notification_smtp_username": "apikey"},  # a relay wanting AUTH: not the mailbox
    ],
)
def test_dev_keeps_a_configured_relay(tmp_path: Path, relay: dict[str, Any]) -> None:
    configured = dev_settings_class()(dev_data_dir=tmp_path, **relay)
    with ExitStack() as started:
        kept, none = _with_mailbox(configured, started)
    assert none is None and kept is configured
