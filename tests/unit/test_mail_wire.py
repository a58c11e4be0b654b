"""workers/notification/wire.py and compose: the shortcuts write exactly what the standard
library writes. Each is compared with the stock code on random input: header folding with
compat32's, the body encoding with quoprimime's, and whole messages with compose as it
was written before (MIMEMultipart, MIMENonMultipart with a Charset, stock compat32)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from email import quoprimime
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import compat32
from email.utils import format_datetime, formataddr
from typing import cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.notification.mail import MailIdentity, compose
from workers.notification.templates import SAMPLE_CUSTOMERS, NoticeTemplates, sample_facts
from workers.notification.wire import WIRE, WirePolicy, quoted_printable
from workers.runtime.deliveries.mail import message_id_for

STOCK = compat32.clone(linesep="\r\n", max_line_length=78)

# Header text: mostly printable ASCII with the characters folding splits at, some tabs,
# line breaks, controls and non-ASCII (which take compat32's own path).
_ODD = st.sampled_from(list("\t\r\n\x00\x7fäé€日😀"))
_PLAIN = st.sampled_from(list(" ,;:\"'<>()@.\\-_=?")) | st.characters(
    min_codepoint=0x20, max_codepoint=0x7E
)
HEADER_TEXT = st.text(st.one_of(_PLAIN, _PLAIN, _PLAIN, _ODD), max_size=120)
NAMES = st.sampled_from(["Subject", "To", "From", "X", "Content-Type", "X-" + "A" * 40])
ADDRESSES = st.from_regex(r"[a-z0-9._+-]{1,30}@[a-z0-9-]{1,20}\.[a-z]{2,10}", fullmatch=True)
# Bodies: lines short and long (soft breaks), escapes ('=', UTF-8) and whitespace where a
# line breaks or ends, every kind of line end.
_BODY_CHARS = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from(list("  \t==\x0b\x85äé€日😀")),
)


@st.composite
def _line_at_the_edge(draw: st.DrawFn) -> str:
    """A line of about one or two encoded lines' length: plain text, an escape where it
    would be broken or whitespace at its end."""
    plain = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="=")
    size = draw(st.sampled_from([70, 145])) + draw(st.integers(0, 9))
    line = draw(st.text(plain, min_size=size, max_size=size))
    at = draw(st.integers(0, size))
    escape = draw(st.sampled_from(["", "=", "é"]))
    end = draw(st.sampled_from(["", " ", "\t"]))
    return line[:at] + escape + line[at:] + end


_LINE = st.one_of(
    st.text(_BODY_CHARS, max_size=40),
    st.text(_BODY_CHARS, min_size=70, max_size=240),
    _line_at_the_edge(),
)
BODIES = st.lists(st.tuples(_LINE, st.sampled_from(["\n", "\r\n", "\r", ""])), max_size=6).map(
    lambda lines: "".join(line + end for line, end in lines)
)


@st.composite
def _near_the_limit(draw: st.DrawFn) -> tuple[str, str]:
    """A header whose ``Name: value`` is within a few characters of 78."""
    name = draw(NAMES)
    size = draw(st.integers(-3, 3)) + 78 - len(name) - 2
    return name, draw(st.text(st.one_of(_PLAIN, _PLAIN, _ODD), min_size=size, max_size=size))


def _outcome(build: Callable[[], object]) -> object:
    """What ``build`` returns, or its error's type and text (both sides must fail alike)."""
    try:
        return build()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=500, deadline=None)
@given(header=st.tuples(NAMES, HEADER_TEXT) | _near_the_limit())
def test_a_header_is_folded_as_compat32_folds_it(header: tuple[str, str]) -> None:
    name, value = header
    assert _outcome(lambda: WIRE.fold_binary(name, value)) == _outcome(
        lambda: STOCK.fold_binary(name, value)
    )
    assert _outcome(lambda: WIRE.fold(name, value)) == _outcome(lambda: STOCK.fold(name, value))


@settings(max_examples=100, deadline=None)
@given(name=NAMES, value=HEADER_TEXT, limit=st.sampled_from([0, 40, 78, 998]))
def test_the_shortcut_keeps_compat32_s_limits_and_header_objects(
    name: str, value: str, limit: int
) -> None:
    mine = WirePolicy(linesep="\n", max_line_length=limit)
    stock = compat32.clone(linesep="\n", max_line_length=limit)
    assert _outcome(lambda: mine.fold(name, value)) == _outcome(lambda: stock.fold(name, value))
    encoded = cast(str, Header(value, "utf-8", header_name=name))
    assert _outcome(lambda: mine.fold_binary(name, encoded)) == _outcome(
        lambda: stock.fold_binary(name, encoded)
    )


@settings(max_examples=500, deadline=None)
@given(text=BODIES)
def test_a_body_is_quoted_printable_as_quoprimime_writes_it(text: str) -> None:
    assert quoted_printable(text) == quoprimime.body_encode(text.encode().decode("latin-1"))


def _shipped_bodies() -> list[tuple[str, str, str]]:
    templates = NoticeTemplates(None)
    common = {"company": "Acme GmbH", "links": {"unsubscribe": "https://acme.test/u"}}
    found = []
    for facts in sample_facts("receipt"):
        for locale in ((), ("de",)):
            notice = templates.render("receipt", locale, facts, SAMPLE_CUSTOMERS[0], common)
            found.append((notice.subject, notice.text, notice.html))
    return found


SHIPPED = _shipped_bodies()
IDENTITIES = st.builds(
    MailIdentity,
    sender=ADDRESSES,
    display_name=HEADER_TEXT,
    reply_to=st.none() | ADDRESSES,
    unsubscribe_url=st.sampled_from([None, "https://acme.test/u", "http://acme.test/u?x=1"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    identity=IDENTITIES,
    to_address=ADDRESSES | HEADER_TEXT,
    to_name=st.none() | HEADER_TEXT,
    subject=HEADER_TEXT,
    bodies=st.sampled_from(SHIPPED) | st.tuples(st.just(""), BODIES, BODIES),
    key=st.text(min_size=1, max_size=80),
    optional=st.booleans(),
    date=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_a_message_is_the_bytes_compose_wrote_before(
    identity: MailIdentity,
    to_address: str,
    to_name: str | None,
    subject: str,
    bodies: tuple[str, str, str],
    key: str,
    optional: bool,
    date: datetime,
) -> None:
    shipped_subject, text, html = bodies

    def built(how: Callable[..., bytes]) -> object:
        return _outcome(
            lambda: how(
                identity=identity,
                to_address=to_address,
                to_name=to_name,
                subject=shipped_subject or subject,
                text=text,
                html=html,
                idempotency_key=key,
                optional=optional,
                date=date,
            )
        )

    assert built(compose) == built(_compose_before)


# -- compose as it was before the shortcuts (commit 307ed51), with the stock compat32 -------


_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP
_ASCII = Charset("us-ascii")


def _compose_before(
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
    boundary = "=_" + hashlib.sha256(b"boundary:" + idempotency_key.encode()).hexdigest()[:32]
    message = MIMEMultipart(
        "alternative", boundary=boundary, _subparts=[_part(text, "plain"), _part(html, "html")]
    )
    message["From"] = formataddr((identity.display_name or "", identity.sender), charset="utf-8")
    message["To"] = formataddr((to_name or "", to_address), charset="utf-8")
    if identity.reply_to:
        message["Reply-To"] = identity.reply_to
    message["Subject"] = (
        subject if subject.isascii() else cast(str, Header(subject, "utf-8", header_name="Subject"))
    )
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id_for(idempotency_key, identity.domain)
    message["Auto-Submitted"] = "auto-generated"
    if optional and identity.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{identity.unsubscribe_url}>"
        if identity.unsubscribe_url.startswith("https://"):
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return message.as_bytes(policy=STOCK)


def _part(body: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    fits = body.isascii() and all(len(line) <= 78 for line in body.splitlines())
    part.set_payload(body if body.endswith("\n") else body + "\n", _ASCII if fits else _UTF8)
    del part["MIME-Version"]
    return part
