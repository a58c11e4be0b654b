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
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

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
        return Address(addr_spec=self.sender).domain


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
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(display_name=identity.display_name, addr_spec=identity.sender)
    message["To"] = Address(display_name=to_name or "", addr_spec=to_address)
    if identity.reply_to:
        message["Reply-To"] = identity.reply_to
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id_for(idempotency_key, identity.domain)
    message["Auto-Submitted"] = "auto-generated"
    if optional and identity.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{identity.unsubscribe_url}>"
        if identity.unsubscribe_url.startswith("https://"):
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    # The generator would draw a random boundary: derived from the key, the same notice
    # is the same bytes every time it is built (a replay, another replica).
    message.set_boundary(
        "=_" + hashlib.sha256(b"boundary:" + idempotency_key.encode()).hexdigest()[:32]
    )
    return message.as_bytes()
