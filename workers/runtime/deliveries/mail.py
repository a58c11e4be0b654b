"""A mail delivery's message as the SMTP channel sends it: its Message-ID and envelope.

The worker builds the whole RFC 5322 message (headers and body, as bytes) and calls
``message_id_for(delivery key, its mail domain)`` for its ``Message-ID``: the same key
always gives the same id, so the copy a crash makes the dispatcher send again carries the
id of the first, and a receiver (or the recipient's mail client) drops it as a duplicate.
``prepare`` checks that before a send: a message whose one Message-ID is the key's is sent
byte for byte as built; one without it (or with another, or several) gets the key's id in
their place, under the domain of the one id it had, else the envelope sender's. Either way
every attempt at a delivery sends the same id.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

ENVELOPE_FROM: Final = "envelope_from"
"""The delivery metadata key of the envelope sender (``MAIL FROM``, where bounces go);
without it the message's ``Sender`` or first ``From`` address is used."""
ID_CHARS: Final = 32
"""Hex digits of the key's SHA-256 in a Message-ID (128 bits: no two keys share one)."""

# A Message-ID's right part as message_id_for writes it: a dot-atom of host characters.
_DOMAIN: Final = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_MSG_ID: Final = re.compile(rb"<([^<>@\s]+)@([^<>@\s]+)>")
_BLANK_LINE: Final = re.compile(rb"\r?\n\r?\n")
# A bare addr-spec: one @, nothing parseaddr would read as a name, comment or quote.
_BARE: Final = re.compile(r"[^\s@<>()\[\]\\,;:\"]+@[^\s@<>()\[\]\\,;:\"]+")


class InvalidMail(ValueError):
    """A delivery the SMTP channel cannot send as built (the worker's bug: ``failed``)."""


def message_id_for(idempotency_key: str, domain: str) -> str:
    """``<sha256-hex-of-the-key@domain>``: the Message-ID of the delivery with that key."""
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"not a mail domain for a Message-ID: {domain!r}")
    return f"<{_key_digest(idempotency_key)}@{domain}>"


@dataclass(frozen=True, slots=True)
class Mail:
    """What one SMTP transaction sends: ``MAIL FROM``, ``RCPT TO`` and ``DATA``."""

    sender: str
    recipient: str
    message: bytes
    utf8: bool
    """An address is not ASCII: the transaction needs the server's SMTPUTF8."""


def prepare(
    destination: str, idempotency_key: str, payload: bytes, metadata: Mapping[str, Any]
) -> Mail:
    """The transaction for a mail delivery, its Message-ID the key's (module docstring);
    ``InvalidMail`` when there is no message, recipient or envelope sender."""
    recipient = _address(destination)
    if not recipient:
        raise InvalidMail("the destination is not a mail address")
    fields, body = _split(payload)
    if not fields:
        raise InvalidMail("the payload has no message headers")
    given = metadata.get(ENVELOPE_FROM)
    if given is not None and not isinstance(given, str):
        raise InvalidMail(f"metadata {ENVELOPE_FROM} is not text")
    sender = _address(given) if given else _author(fields)
    if not sender:
        raise InvalidMail("no envelope sender: neither metadata nor a From address")
    message = _with_message_id(fields, body, payload, idempotency_key, sender)
    return Mail(sender, recipient, message, not (sender + recipient).isascii())


def _key_digest(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:ID_CHARS]


def _address(text: str) -> str:
    """The bare address of ``text`` (``Jane <jane@example.com>`` gives the part in <>)."""
    if _BARE.fullmatch(text):  # the usual destination: no parse (a fifth of a send's CPU)
        return text
    address = email.utils.parseaddr(text)[1]
    return address if "@" in address else ""


def _split(payload: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its folded continuation lines and line ending) and
    everything from the blank line on."""
    blank = _BLANK_LINE.search(payload)
    if blank is None:  # headers only, no body
        head, rest = payload, b""
    else:
        cut = blank.start() + (2 if payload[blank.start() : blank.start() + 1] == b"\r" else 1)
        head, rest = payload[:cut], payload[cut:]
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif b":" in line:
            fields.append(line)
        else:
            return [], payload  # not a header block: no message
    return fields, rest


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _value(field: bytes) -> str:
    return " ".join(field.split(b":", 1)[1].decode("utf-8", "replace").split())


def _author(fields: list[bytes]) -> str:
    """The envelope sender a message names: its ``Sender``, else its first ``From``."""
    for name in (b"sender", b"from"):
        for field in fields:
            if _name(field) == name:
                for _, address in email.utils.getaddresses([_value(field)]):
                    if "@" in address:
                        return address
    return ""


def _with_message_id(
    fields: list[bytes], body: bytes, payload: bytes, key: str, sender: str
) -> bytes:
    ids = [field for field in fields if _name(field) == b"message-id"]
    found = _MSG_ID.fullmatch(_value(ids[0]).encode()) if len(ids) == 1 else None
    if found and found[1].decode() == _key_digest(key):
        return payload  # built with message_id_for: sent as it is
    domain = found[2].decode() if found else sender.rpartition("@")[2]
    if not _DOMAIN.fullmatch(domain):
        domain = "billing-fleet"
    newline = b"\r\n" if fields[0].endswith(b"\r\n") else b"\n"
    header = b"Message-ID: " + message_id_for(key, domain).encode() + newline
    # A message of headers only may end without a line ending: every field gets one.
    kept = [
        field if field.endswith(b"\n") else field + newline
        for field in fields
        if _name(field) != b"message-id"
    ]
    return header + b"".join(kept) + body
