"""Masking: addresses and secrets never shown whole, wherever they are shown."""

from __future__ import annotations

import io
import json
import logging
import string

from hypothesis import given
from hypothesis import strategies as st

from billing_fleet.logs import MaskingJsonFormatter
from billing_fleet.masking import (
    MASK,
    mask_addresses,
    mask_destination,
    mask_email,
    mask_secret,
)
from workers.runtime.deliveries.dispatcher import _masked
from workers.runtime.deliveries.model import SendResult


def test_an_address_keeps_first_letters_and_top_level_domain() -> None:
    assert mask_email("jane.doe@example.com") == "j***@e***.com"
    assert mask_email("Jane Doe <jane.doe@mail.example.co.uk>") == "j***@m***.uk"
    assert mask_email("  root@localhost ") == "r***@l***"
    assert mask_email("j***@e***.com") == "j***@e***.com"  # masking twice changes nothing


def test_what_is_no_address_is_masked_whole() -> None:
    for text in ("jane.doe", "@example.com", "jane@", ""):
        assert mask_email(text) == MASK


def test_addresses_in_free_text_are_masked_and_nothing_else() -> None:
    reply = "RCPT 550 5.1.1 <jane.doe@example.com>: Recipient address rejected (for bob@x.org)"
    assert mask_addresses(reply) == (
        "RCPT 550 5.1.1 <j***@e***.com>: Recipient address rejected (for b***@x***.org)"
    )
    # A database URL's user@host (an IP, or a name without a top-level domain) stays.
    url = "postgresql://postgres@127.0.0.1:5432/postgres and user@localhost"
    assert mask_addresses(url) == url
    assert mask_addresses("no address here") == "no address here"
    verp = "bounce+jane=example.com@mail.example.org"
    assert mask_addresses(verp) == "b***@m***.org"


def test_a_destination_is_masked_when_it_is_an_address_or_holds_one() -> None:
    assert mask_destination("jane.doe@example.com") == "j***@e***.com"
    # An address the free-text pattern would not take is still masked whole.
    assert mask_destination('"jane doe"@example.com') == '"***@e***.com'
    assert mask_destination("https://hooks.example.com/in") == "https://hooks.example.com/in"
    assert (
        mask_destination("https://hooks.example.com/in?to=jane@example.com")
        == "https://hooks.example.com/in?t***@e***.com"
    )


def test_a_secret_shows_nothing_or_only_its_tail() -> None:
    assert mask_secret("hunter2") == MASK
    assert mask_secret("sk_live_0123456789abcdef", keep=4) == "***cdef"
    assert mask_secret("short", keep=4) == MASK  # too short for a tail to give nothing away
    assert mask_secret(None) == mask_secret("") == ""


_LOCAL = st.text(string.ascii_letters + string.digits + "._+-", min_size=2, max_size=30)
_LABEL = st.text(string.ascii_lowercase + string.digits + "-", min_size=2, max_size=20)


@given(local=_LOCAL, label=_LABEL, top=st.sampled_from(["com", "org", "de", "example"]))
def test_neither_part_of_an_address_is_ever_shown_whole(local: str, label: str, top: str) -> None:
    address = f"{local}@{label}.{top}"
    for masked in (mask_email(address), mask_addresses(f"to <{address}>: refused")):
        assert address not in masked
        assert f"{label}.{top}" not in masked
        assert f"{local}@" not in masked


def test_the_log_formatter_masks_addresses_in_every_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingJsonFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("refused jane.doe@example.com", extra={"error": "550 <bob@x.org>"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "refused j***@e***.com"
    assert line["error"] == "550 <b***@x***.org>"


def test_the_dispatcher_records_receivers_texts_masked() -> None:
    refused = SendResult("failed", "550", "RCPT 550 <jane.doe@example.com> unknown")
    assert _masked(refused) == SendResult("failed", "550", "RCPT 550 <j***@e***.com> unknown")
    plain = SendResult("retry", "503", "HTTP 503")
    assert _masked(plain) is plain
