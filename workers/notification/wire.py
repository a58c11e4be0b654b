"""How a notice's message is written out: compat32 (CRLF, 78-character lines), with a
shortcut for the headers that need no folding, and quoted-printable bodies.

compat32 builds an ``email.header.Header`` for every header and runs its folding
algorithm, which was most of the cost of writing a message. A value of printable ASCII
(no tab, CR or LF) whose ``Name: value`` fits the line comes out of that algorithm as it
went in, so ``WirePolicy`` writes those directly and hands every other header to compat32.
``quoted_printable`` is the standard library's body encoding with a cheaper first step.
tests/unit/test_mail_wire.py compares both with the standard library's own on random
headers, bodies and whole messages.
"""

from __future__ import annotations

import re
from email import quoprimime
from email.header import Header
from email.policy import Compat32
from typing import Final


class WirePolicy(Compat32):
    """compat32, its output byte for byte, without folding what needs no folding."""

    def fold(self, name: str, value: str) -> str:
        if self._fits(name, value):
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if self._fits(name, value):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)

    def _fits(self, name: str, value: str | Header) -> bool:
        """Whether compat32 would write ``value`` on the header's line unchanged."""
        limit = self.max_line_length or _UNLIMITED  # compat32: None or 0 is no limit
        return (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()
            and name.isascii()
            and len(name) + 2 + len(value) <= limit
        )


_UNLIMITED: Final = 1_000_000  # what email.header.Header.encode takes a 0 limit as

WIRE: Final = WirePolicy(linesep="\r\n", max_line_length=78)
"""SMTP's line ends and RFC 5322's recommended line length."""


_ESCAPES: Final = {
    chr(octet): quoprimime.quote(chr(octet))
    for octet in range(256)
    if quoprimime.body_check(octet) and octet not in b"\r\n"
}
"""What quoted-printable writes for each octet it escapes in a body (``=`` is ``=3D``)."""
_ESCAPED_BUT_EQUALS: Final = re.compile(
    "[" + "".join(re.escape(char) for char in _ESCAPES if char != "=") + "]"
)
_MAX_LINE: Final = 76  # RFC 2045's, and quoprimime's default


def quoted_printable(text: str) -> str:
    """``text`` as UTF-8 in quoted-printable, ``\\n`` line ends: exactly what
    ``Charset("utf-8")`` with QP body encoding makes of it (``quoprimime.body_encode``)."""
    body = text.encode().decode("latin-1")  # quoprimime's input: one char per octet
    if not body:
        return body
    # quoprimime maps every char through a table (str.translate), which costs per char;
    # only '=' (replaced first) and a few octets (mostly UTF-8's) change.
    body = _ESCAPED_BUT_EQUALS.sub(_escape, body.replace("=", "=3D"))
    # From here on quoprimime.body_encode's own lines, unchanged.
    encoded: list[str] = []
    append = encoded.append
    for line in body.splitlines():
        start = 0
        laststart = len(line) - 1 - _MAX_LINE
        while start <= laststart:
            stop = start + _MAX_LINE - 1
            if line[stop - 2] == "=":  # an escape is not split
                append(line[start : stop - 1])
                start = stop - 2
            elif line[stop - 1] == "=":
                append(line[start:stop])
                start = stop - 1
            else:
                append(line[start:stop] + "=")
                start = stop
        if line and line[-1] in " \t":  # whitespace at a line's end is escaped
            room = start - laststart
            if room >= 3:
                end = quoprimime.quote(line[-1])
            elif room == 2:
                end = line[-1] + "=\n"
            else:
                end = "=\n" + quoprimime.quote(line[-1])
            append(line[start:-1] + end)
        else:
            append(line[start:])
    if body[-1] in "\r\n":
        append("")
    return "\n".join(encoded)


def _escape(match: re.Match[str]) -> str:
    return _ESCAPES[match.group()]
