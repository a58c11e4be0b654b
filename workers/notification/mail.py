"""The RFC 5322 message of one notice: multipart/alternative (text, then HTML).

The SMTP channel sends the payload as it is, to the delivery's destination. Its
``Message-ID`` is derived from the delivery's idempotency key (the SMTP channel's
``message_id_for``, which checks it before each send), so a
mail sent twice after a crash carries the same id and the receiving side can drop it;
the MIME boundary is derived from the key too, so the same notice is the same bytes
whenever it is built.
``Auto-Submitted: auto-generated`` (RFC 3834) keeps auto-responders from answering. Only
optional notices carry ``List-Unsubscribe`` (RFC 2369, with RFC 8058's one-click POST
for an https link), never receipts or dunning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import Message
from email.utils import format_datetime, formataddr
from typing import cast

from workers.notification.wire import WIRE, quoted_printable
from workers.runtime.deliveries.mail import message_id_for


@dataclass(frozen=True, slots=True)
class MailIdentity:
    """Who the mails are from (settings)."""

    sender: str
    """The From address."""
    display_name: str
    """The From display name: the company."""
    reply_to: str | None
    unsubscribe_url: str | None
    """``links["unsubscribe"]``, for the optional notices' ``List-Unsubscribe``."""

    @property
    def domain(self) -> str:
        """The sender's domain: the right side of every Message-ID."""
        return self.sender.rpartition("@")[2]


def compose(
    *,
    identity: MailIdentity,
    to_address: str,
    to_name: str | None,
    subject: str,
    text: str,
    html: str,
    idempotency_key: str,
    optional: bool,
    date: datetime,
) -> bytes:
    """The message's bytes, CRLF line ends (what SMTP's DATA carries)."""
    # The compat32 classes, not EmailMessage: its header registry parses every header it
    # is given back again, which made composing most of the worker's time per notice.
    boundary = "=_" + hashlib.sha256(b"boundary:" + idempotency_key.encode()).hexdigest()[:32]
    # The boundary is derived from the key (the generator would draw a random one): the
    # same notice is the same bytes every time it is built (a replay, another replica).
    # Plain Messages with the headers MIMEMultipart and MIMENonMultipart would set: those
    # classes add the parameters by parsing and rewriting the Content-Type again.
    message = Message()
    message["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
    message["MIME-Version"] = "1.0"
    message.set_payload([_part(text, "plain"), _part(html, "html")])
    message["From"] = _address(identity.display_name, identity.sender)
    message["To"] = _address(to_name, to_address)
    if identity.reply_to:
        message["Reply-To"] = identity.reply_to
    message["Subject"] = _unstructured(subject, "Subject")
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id_for(idempotency_key, identity.domain)
    message["Auto-Submitted"] = "auto-generated"
    if optional and identity.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{identity.unsubscribe_url}>"
        if identity.unsubscribe_url.startswith("https://"):
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return message.as_bytes(policy=WIRE)


def _part(body: str, subtype: str) -> Message:
    """A text part, its body ending in a line break: ASCII whose lines fit (78
    characters) as it is (7bit), else UTF-8 as quoted-printable, which is readable in the
    raw message (unlike base64) and wraps long lines (SMTP refuses lines over 998)."""
    if not body.endswith("\n"):
        body += "\n"
    # What ``set_payload(body, charset)`` made of a MIMENonMultipart, without its detours
    # (the body encoded, decoded and encoded again, a MIME-Version deleted again).
    part = Message()
    if body.isascii() and all(len(line) <= 78 for line in body.splitlines()):
        part["Content-Type"] = f'text/{subtype}; charset="us-ascii"'
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(body)
    else:
        part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(quoted_printable(body))
    return part


def _unstructured(value: str, name: str) -> str:
    if value.isascii():
        return value
    # The generator folds a Header as encoded words; typeshed types header values as str.
    return cast(str, Header(value, "utf-8", header_name=name))


def _address(name: str | None, address: str) -> str:
    """``Name <address>`` (the name quoted or RFC 2047-encoded as it needs), or the bare
    address; an address that is not ASCII raises (``rules.valid_address`` skips those)."""
    return formataddr((name or "", address), charset="utf-8")
