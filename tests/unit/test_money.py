"""billing_fleet.money: Stripe's minor units written as people read them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal

import pytest
from babel import Locale, localedata
from babel.core import UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision, list_currencies, parse_pattern
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_fleet.money import (
    STRIPE_THREE_DECIMAL,
    STRIPE_ZERO_DECIMAL,
    UnknownCurrency,
    currency_code,
    currency_exponent,
    format_money,
    to_major,
)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1500, "JPY", "¥1,500"),
        (1500, "jpy", "¥1,500"),  # Stripe's codes are lower-case
        (1999, "USD", "$19.99"),
        (1999, "usd", "$19.99"),
        (0, "USD", "$0.00"),
        (1234, "KWD", "KWD1.234"),
        (1230, "kwd", "KWD1.230"),
        (50000, "KRW", "₩50,000"),
        (123456, "VND", "₫123,456"),
        (5000, "CLP", "CLP5,000"),
        (2500, "BHD", "BHD2.500"),
        (1999, "EUR", "€19.99"),
    ],
)
def test_format_money_en(amount: int, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


def test_negative_amounts_keep_their_sign() -> None:
    assert format_money(-1999, "USD") == "-$19.99"
    assert format_money(-1500, "JPY") == "-¥1,500"
    assert format_money(-1234, "KWD") == "-KWD1.234"


def test_the_locale_places_symbol_and_separators() -> None:
    assert format_money(123456, "EUR", "de") == "1.234,56\xa0€"
    assert format_money(1234, "KWD", "de") == "1,234\xa0KWD"
    assert format_money(1999, "USD", "en_CA") == "US$19.99"


def test_stripe_two_decimal_where_cldr_has_none() -> None:
    """ISK and HUF are two-decimal in Stripe's API although CLDR writes them without
    decimals: whole amounts as CLDR writes them, a fraction never rounded away."""
    assert currency_exponent("ISK") == 2 and get_currency_precision("ISK") == 0
    assert format_money(10000, "ISK") == "ISK100"
    assert format_money(1999, "HUF") == "HUF19.99"
    assert format_money(1950, "HUF") == "HUF19.50"
    assert format_money(123400, "IDR") == "IDR1,234"


def test_exponents_and_exact_major_units() -> None:
    assert [currency_exponent(c) for c in ("JPY", "usd", "KWD", "ISK")] == [0, 2, 3, 2]
    assert to_major(1999, "usd") == Decimal("19.99")
    assert to_major(1234, "KWD") == Decimal("1.234")
    assert to_major(1500, "JPY") == Decimal(1500)
    assert to_major(10**18 + 1, "USD") == Decimal("10000000000000000.01")  # no float


def test_babel_agrees_with_stripes_lists() -> None:
    """The display digits CLDR gives Stripe's zero- and three-decimal currencies match
    the exponent (a Babel upgrade that changes one fails here)."""
    for code in STRIPE_ZERO_DECIMAL:
        assert get_currency_precision(code) == 0, code
    for code in STRIPE_THREE_DECIMAL:
        assert get_currency_precision(code) == 3, code


@pytest.mark.parametrize("currency", ["XYZ", "", "US", "dollars", "U$D"])
def test_an_unknown_currency_is_a_clear_error(currency: str) -> None:
    with pytest.raises(UnknownCurrency, match="unknown currency code"):
        format_money(100, currency)
    with pytest.raises(ValueError):  # UnknownCurrency is one
        currency_code(currency)


def test_an_unknown_locale_is_babels_error() -> None:
    with pytest.raises(UnknownLocaleError):
        format_money(100, "USD", "xx_YY")


# -- Babel's own text, without Babel's cost per call -------------------------------------------


def _babel_money(amount_minor: int, currency: str, locale: str) -> str:
    """format_money as it was written before its layouts and memo: Babel every call."""
    code = currency_code(currency)
    value, exponent = to_major(amount_minor, code), currency_exponent(code)
    shown = get_currency_precision(code)
    if shown >= exponent or amount_minor % 10 ** (exponent - shown) == 0:
        return format_currency(value, code, locale=locale)
    pattern = copy.copy(parse_pattern(Locale.parse(locale).currency_formats["standard"]))
    pattern.frac_prec = (exponent, exponent)
    return format_currency(value, code, format=pattern, locale=locale, currency_digits=False)


def _outcome(amount_minor: int, currency: str, locale: str, how: Callable[..., str]) -> str:
    """The text, or the error's type (an unknown locale, an amount Babel cannot quantize)."""
    try:
        return how(amount_minor, currency, locale)
    except Exception as exc:
        return type(exc).__name__


LOCALES = sorted(localedata.locale_identifiers())
AMOUNTS = st.one_of(
    st.integers(-(10**9), 10**9),
    st.integers(-(10**30), 10**30),
    st.sampled_from([0, 1, -1, 5, 1950, 1999, 10**18 - 1, 10**18, -(10**18)]),
)


@settings(max_examples=1000, deadline=None)
@given(
    amount=AMOUNTS,
    currency=st.sampled_from([*sorted(list_currencies()), "usd", "jpy", "kwd", "XYZ"]),
    locale=st.sampled_from([*LOCALES, "en", "de", "de_CH", "en_IN", "xx_YY", "de-CH", ""]),
)
def test_format_money_writes_what_babel_writes(amount: int, currency: str, locale: str) -> None:
    assert _outcome(amount, currency, locale, format_money) == _outcome(
        amount, currency, locale, _babel_money
    )


def test_every_locale_babel_has_is_written_as_babel_writes_it() -> None:
    for locale in LOCALES:
        for currency in ("EUR", "JPY", "KWD", "HUF", "CHF", "INR"):
            for amount in (-123456789, 1950):
                expected = _babel_money(amount, currency, locale)
                assert format_money(amount, currency, locale) == expected, (locale, currency)


def test_babel_s_quirks_are_kept() -> None:
    """de_CH groups with an apostrophe, which Babel then takes for quotes: a pair of them
    is dropped; en_IN groups by two above the thousands."""
    assert format_money(1234567, "CHF", "de_CH") == "CHF\xa012'345.67"
    assert format_money(123456789, "CHF", "de_CH") == "CHF\xa01234567.89"
    assert format_money(123456789012, "CHF", "de_CH") == "CHF\xa01234567'890.12"
    assert format_money(123456789, "INR", "en_IN") == "₹12,34,567.89"
