"""A locale's standard currency pattern resolved once per currency: the text Babel's
``format_currency`` writes for an amount, without working the pattern, symbols and
placeholders out again on every call (most of the cost of a formatted amount).

``currency_layout(code, locale).write(...)`` is Babel's ``NumberPattern.apply`` for
the patterns CLDR's standard currency formats use (prefix, grouped integer, fixed
fraction digits, suffix, Latin digits), step for step, and the same text for every
amount below ``EXACT_BELOW`` (tests/unit/test_money.py compares the two).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from babel import Locale
from babel.numbers import get_currency_symbol, get_decimal_symbol, get_group_symbol

EXACT_BELOW: Final = 10**18
"""Minor units below which ``CurrencyLayout.write`` is Babel's text; Babel's ``Decimal``
arithmetic (28 digits) rounds or raises for far larger amounts, so those stay Babel's."""

_QUOTED: Final = re.compile(r"'([^']*)'")


@dataclass(frozen=True, slots=True)
class CurrencyLayout:
    """How one locale writes one currency."""

    prefix: tuple[str, str]
    """Before the number: positive, negative (currency placeholders replaced)."""
    suffix: tuple[str, str]
    min_int: int
    grouping: tuple[int, int]
    """Digits in the first group and in the ones before it (3, 2 for en_IN)."""
    group: str
    decimal: str
    unquote: bool
    """A part holds a quote (de_CH groups with ``'``): Babel's last step, unquoting the
    whole text, is done too (it drops a pair of such separators: 1'234'567 is 1234567)."""

    def write(self, amount_minor: int, exponent: int, digits: int) -> str:
        """``amount_minor`` (minor units of ``exponent`` digits) with ``digits`` fraction
        digits; fewer than ``exponent`` only when the digits left out are zeros (Babel
        would round them)."""
        whole, fraction = divmod(abs(amount_minor), 10**exponent)
        value = str(whole).rjust(self.min_int, "0")
        size, grouped = self.grouping[0], ""
        while len(value) > size:  # NumberPattern._format_int's loop
            grouped = self.group + value[-size:] + grouped
            value = value[:-size]
            size = self.grouping[1]
        number = value + grouped
        if digits:
            written = str(fraction).rjust(exponent, "0") if exponent else ""
            number += self.decimal + written.ljust(digits, "0")[:digits]
        negative = int(amount_minor < 0)
        text = self.prefix[negative] + number + self.suffix[negative]
        return _QUOTED.sub(_unquoted, text) if self.unquote else text


def _unquoted(match: re.Match[str]) -> str:
    return match.group(1) or "'"


@lru_cache(maxsize=1024)
def currency_layout(code: str, locale: str) -> CurrencyLayout | None:
    """``code`` (upper case) in ``locale``'s standard currency format, or None for a
    pattern this does not write as Babel does (scientific, significant digits, percent,
    the currency's long name): Babel formats those. An unknown locale raises Babel's
    own error."""
    parsed = Locale.parse(locale)
    pattern = parsed.currency_formats["standard"]
    affixes = (*pattern.prefix, *pattern.suffix)
    if pattern.exp_prec or "@" in pattern.pattern or pattern.scale or not pattern.number_pattern:
        return None
    if any("¤¤¤" in text for text in affixes):
        return None
    symbol = get_currency_symbol(code, parsed)
    group = get_group_symbol(parsed, numbering_system="latn")
    decimal = get_decimal_symbol(parsed, numbering_system="latn")
    if "¤" in group + decimal:
        return None
    # Babel replaces the placeholders in the whole text; per part is the same as long as
    # the number's own symbols hold none.
    prefix = tuple(text.replace("¤¤", code).replace("¤", symbol) for text in pattern.prefix)
    suffix = tuple(text.replace("¤¤", code).replace("¤", symbol) for text in pattern.suffix)
    return CurrencyLayout(
        prefix=(prefix[0], prefix[1]),
        suffix=(suffix[0], suffix[1]),
        min_int=pattern.int_prec[0],
        grouping=pattern.grouping,
        group=group,
        decimal=decimal,
        unquote="'" in "".join((*prefix, *suffix, group, decimal)),
    )
