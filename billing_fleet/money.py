"""Money for people: integer minor units and an ISO currency, as a locale writes them.

Amounts everywhere in the fleet are Stripe's: integers in the currency's minor unit. How
many minor units make one major unit is Stripe's choice, which is not always ISO 4217's
or CLDR's (below), so the exponent comes from Stripe's lists and Babel (CLDR) supplies the
symbol, digits, separators and pattern of the locale.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from functools import lru_cache
from typing import Final

from babel import Locale
from babel.numbers import (
    format_currency,
    get_currency_precision,
    list_currencies,
    parse_pattern,
)

from billing_fleet.currency_layout import EXACT_BELOW, currency_layout

# Stripe's zero-decimal and three-decimal currencies (docs.stripe.com/currencies); every
# other currency Stripe supports is two-decimal in its API. Babel (CLDR 47) agrees on
# all of these (tests/unit/test_money.py pins that). Where CLDR differs is the other
# way: it gives 0 digits to ISK, HUF, IDR, COP, ALL, AFN, IQD, IRR, KPW, LAK, LBP, MMK,
# SLL, SOS, SYP and YER (and 3 to LYD, 4 to CLF and UYW), all of which Stripe keeps
# two-decimal (an ISK amount of 100 is 1 krona): for those Stripe's exponent wins.
STRIPE_ZERO_DECIMAL: Final = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"}
    | {"PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
STRIPE_THREE_DECIMAL: Final = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
_KNOWN: Final = frozenset(list_currencies())  # every code in CLDR, current and historic


class UnknownCurrency(ValueError):
    """A currency code that is not one CLDR knows: its decimal point would be a guess,
    and a receipt 100 times off is worse than none."""


def currency_code(currency: str) -> str:
    """``currency`` as its upper-case ISO 4217 code (Stripe sends ``usd``);
    ``UnknownCurrency`` when CLDR does not know it."""
    code = currency.strip().upper()
    if code not in _KNOWN:
        raise UnknownCurrency(f"unknown currency code {currency!r} (not an ISO 4217 code)")
    return code


def currency_exponent(currency: str) -> int:
    """Digits of Stripe's minor unit: 0 (JPY), 3 (KWD) or 2 (everything else)."""
    code = currency_code(currency)
    if code in STRIPE_ZERO_DECIMAL:
        return 0
    if code in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def to_major(amount_minor: int, currency: str) -> Decimal:
    """``amount_minor`` in major units, exactly: 1999 USD is ``Decimal("19.99")``."""
    return Decimal(amount_minor).scaleb(-currency_exponent(currency))


def format_money(amount_minor: int, currency: str, locale: str = "en") -> str:
    """``amount_minor`` as ``locale`` writes it: JPY 1500 is ``¥1,500``, USD -1999 is
    ``-$19.99``, KWD 1234 is ``KWD1.234`` (in ``en``).

    The locale's digits for the currency are used when they show the amount exactly
    (ISK 10000 is ``ISK100``); an amount they would round (HUF 1999: CLDR writes HUF
    without decimals) shows all of Stripe's digits instead (``HUF19.99``): money is
    never rounded for display. ``UnknownCurrency`` for a code CLDR does not know;
    Babel's ``UnknownLocaleError`` for an unknown locale.

    The text is Babel's ``format_currency``'s, character for character, written with the
    locale's pattern resolved once per (currency, locale) (``currency_layout``); the
    last ``MEMO_SIZE`` distinct (amount, currency, locale) are kept, so an amount a
    notice shows in its subject, text and HTML is formatted once."""
    return _format_money(amount_minor, currency, locale)


MEMO_SIZE: Final = 1024
"""How many formatted amounts ``format_money`` keeps (some 400 KiB when full)."""


@lru_cache(maxsize=MEMO_SIZE)
def _format_money(amount_minor: int, currency: str, locale: str) -> str:
    code = currency_code(currency)
    exponent = currency_exponent(code)
    shown = get_currency_precision(code)
    exact = shown >= exponent or amount_minor % 10 ** (exponent - shown) == 0
    digits = shown if exact else exponent
    # Babel itself for an empty locale (its LC_MONETARY default), an amount past
    # EXACT_BELOW and a pattern currency_layout leaves to it.
    layout = currency_layout(code, locale) if locale and abs(amount_minor) < EXACT_BELOW else None
    if layout is not None:
        return layout.write(amount_minor, exponent, digits)
    value = to_major(amount_minor, code)
    if exact:
        return format_currency(value, code, locale=locale)
    pattern = copy.copy(parse_pattern(Locale.parse(locale).currency_formats["standard"]))
    pattern.frac_prec = (digits, digits)
    return format_currency(value, code, format=pattern, locale=locale, currency_digits=False)
