"""Money on the wire: integer minor units plus an ISO 4217 currency code. Never float."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

# ISO 4217 currencies payrail accepts, with their minor-unit exponent: an amount of
# `amount_minor` is `amount_minor / 10**exponent` units of the currency (30 is 0.30 USD,
# 30 JPY, 0.030 BHD). The list is kept deliberately short: a currency is added when a
# channel can settle it, not before. Every money setting (fixed fees, amount limits) is
# set per currency in that currency's minor units, because one number means amounts a
# thousand times apart across exponents.
CURRENCY_EXPONENTS: dict[str, int] = {
    "CNY": 2,
    "HKD": 2,
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "SGD": 2,
    "JPY": 0,
    "KRW": 0,
    "BHD": 3,
    "JOD": 3,
    "KWD": 3,
    "OMR": 3,
    "TND": 3,
}

# The currencies payrail accepted before money settings were per currency. A risk limit
# recorded then, as one number, was enforced as that many minor units of each of them; it
# keeps exactly that meaning for them and none for currencies added since.
CURRENCIES_BEFORE_PER_CURRENCY_SETTINGS: tuple[str, ...] = (
    "CNY",
    "HKD",
    "USD",
    "EUR",
    "GBP",
    "SGD",
    "JPY",
    "KRW",
)

# The largest single amount payrail accepts, in minor units of any currency. It keeps
# every sum of a day's amounts far inside PostgreSQL bigint and is larger than any real
# e-commerce payment (10^12 minor units is ten billion in a two-decimal currency).
AMOUNT_MINOR_MAX = 10**12


class UnknownCurrency(ValueError):
    """The currency code is not an ISO 4217 code that payrail supports."""


def check_currency(code: str) -> str:
    """Return `code` when it is a supported ISO 4217 code; raise UnknownCurrency otherwise."""
    if code not in CURRENCY_EXPONENTS:
        raise UnknownCurrency(
            f"unsupported currency {code!r}; supported: {', '.join(sorted(CURRENCY_EXPONENTS))}"
        )
    return code


def exponent_of(currency: str) -> int:
    """The ISO 4217 minor-unit exponent of `currency` (0 for JPY, 2 for USD, 3 for BHD).

    Raises UnknownCurrency for a currency payrail does not support.
    """
    return CURRENCY_EXPONENTS[check_currency(currency)]


def format_amount(amount_minor: int, currency: str) -> str:
    """Return the amount as people read it, e.g. `12.34 CNY`, `-0.05 USD` or `500 JPY`,
    with integer arithmetic only; an unknown currency shows its minor units."""
    exponent = CURRENCY_EXPONENTS.get(currency)
    if exponent is None:
        return f"{amount_minor} {currency} (minor units)"
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(amount_minor), 10**exponent)
    if exponent == 0:
        return f"{sign}{major} {currency}"
    return f"{sign}{major}.{minor:0{exponent}d} {currency}"


CurrencyCode = Annotated[
    str,
    Field(min_length=3, max_length=3, json_schema_extra={"enum": sorted(CURRENCY_EXPONENTS)}),
    AfterValidator(check_currency),
]
PositiveAmountMinor = Annotated[int, Field(strict=True, gt=0, le=AMOUNT_MINOR_MAX)]
SignedAmountMinor = Annotated[int, Field(strict=True, ge=-AMOUNT_MINOR_MAX, le=AMOUNT_MINOR_MAX)]
NonNegativeAmountMinor = Annotated[int, Field(strict=True, ge=0, le=AMOUNT_MINOR_MAX)]


BASIS_POINTS_PER_UNIT = 10_000


def divide_round_half_even(numerator: int, denominator: int) -> int:
    """`numerator / denominator` rounded to the nearest integer, ties to the even one.

    Pure integer arithmetic: no float, no Decimal. Raises ValueError for a negative
    numerator or a denominator that is not positive.
    """
    if numerator < 0 or denominator <= 0:
        raise ValueError(f"cannot divide {numerator} by {denominator} here")
    quotient, remainder = divmod(numerator, denominator)
    twice_remainder = 2 * remainder
    if twice_remainder > denominator or (twice_remainder == denominator and quotient % 2 == 1):
        return quotient + 1
    return quotient
