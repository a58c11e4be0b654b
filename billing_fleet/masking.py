"""Masks for what must not reach a log, an operator's screen or an error column whole:
e-mail addresses and secrets.

Every place that shows a mail destination or a receiver's text uses these (the deliveries
dispatcher's recorded errors, ``billing-fleet deliveries list``, the JSON log formatter),
so an address looks the same everywhere: ``jane.doe@example.com`` is ``j***@e***.com``,
enough to tell mails apart in a log, not enough to write to anyone.
"""

from __future__ import annotations

import email.utils
import re
from typing import Final

MASK: Final = "***"

# An address inside free text (an SMTP reply, an exception's message): a local part of
# atom characters but "/" and "?" (so a URL before it is not taken for one; "=" stays, or
# a VERP address ``bounce+jane=example.com@...`` would show its user), a domain of at
# least two labels whose last one is letters (so ``postgres@127.0.0.1`` in a database URL
# is no address). What it misses (a quoted local part) is rarely in free text; a
# destination known to be an address goes through ``mask_email`` whole instead.
_ADDRESS: Final = re.compile(r"[\w.!#$%&'*+=^`{|}~-]+@(?:[\w-]+\.)+[^\W\d_]{2,}")


def mask_email(address: str) -> str:
    """``j***@e***.com`` for ``jane.doe@example.com`` (or ``Jane <jane.doe@example.com>``):
    the first character of the local part and of the domain, and the top-level domain;
    never either part whole. Text that is no address at all is masked whole."""
    addr = email.utils.parseaddr(address)[1] or address.strip()
    local, at, domain = addr.rpartition("@")
    if not (at and local and domain):
        return MASK
    name, dot, top = domain.rpartition(".")
    masked_domain = f"{name[:1]}{MASK}.{top}" if dot and name and top else f"{domain[:1]}{MASK}"
    return f"{local[:1]}{MASK}@{masked_domain}"


def mask_addresses(text: str) -> str:
    """``text`` with every e-mail address in it masked (``mask_email``)."""
    if "@" not in text:  # the common case, without a regex pass
        return text
    return _ADDRESS.sub(lambda match: mask_email(match.group(0)), text)


def mask_destination(destination: str) -> str:
    """A delivery's destination for display: an address (no URL scheme) masked whole, a
    URL with any address in it (a query parameter, user info) masked."""
    if "://" not in destination and "@" in destination:
        return mask_email(destination)
    return mask_addresses(destination)


def mask_secret(secret: str | None, *, keep: int = 0) -> str:
    """``***`` for a secret (its length not shown), or ``***`` plus its last ``keep``
    characters when it is long enough that they give nothing away (four times ``keep``
    at least): enough to tell two API keys apart. Empty or None: the empty string."""
    if not secret:
        return ""
    if keep > 0 and len(secret) >= 4 * keep:
        return MASK + secret[-keep:]
    return MASK
