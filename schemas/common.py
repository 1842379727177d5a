"""Value objects shared by several contracts."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from schemas.envelope import Contract
from schemas.money import (
    BASIS_POINTS_PER_UNIT,
    CURRENCY_EXPONENTS,
    CurrencyCode,
    NonNegativeAmountMinor,
    divide_round_half_even,
)


class Channel(StrEnum):
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"
    CARD = "card"


BasisPoints = Annotated[int, Field(strict=True, ge=0, le=10_000)]


class CurrencyNotPriced(ValueError):
    """A fee plan sets no fixed fee for the currency; `code` is stable for API errors."""

    code = "currency_not_priced"


class FeePlan(Contract):
    """A channel's price for one merchant: basis points of the amount plus a fixed part
    set per currency, in that currency's minor units (ISO 4217 exponent: a fixed fee of
    30 is 0.30 USD, 30 JPY or 0.030 BHD, so each currency gets its own number).

    A merchant's plan prices the currencies `fixed_minor_by_currency` names; a plan with
    no fixed part at all (no currencies, `fixed_minor` 0) prices every currency, since
    zero means the same in each. A payment carries the plan of its own currency.
    """

    basis_points: BasisPoints
    fixed_minor_by_currency: dict[CurrencyCode, NonNegativeAmountMinor] = Field(
        default_factory=dict,
        max_length=len(CURRENCY_EXPONENTS),
        description="The fixed part of the fee in each currency the plan prices, in "
        "minor units of that currency.",
    )
    fixed_minor: NonNegativeAmountMinor = Field(
        default=0,
        description="Fixed fees before they were per currency: one number of minor units "
        "of whatever currency a payment was in. A payment recorded then was charged it in "
        "its own currency; new plans leave it 0 and use fixed_minor_by_currency.",
    )

    @model_validator(mode="after")
    def _one_kind_of_fixed_part(self) -> Self:
        if self.fixed_minor and self.fixed_minor_by_currency:
            raise ValueError("set fixed_minor_by_currency only; fixed_minor names no currency")
        return self

    @property
    def names_its_currencies(self) -> bool:
        """False for a plan whose fixed part names no currency (a non-zero `fixed_minor`):
        a merchant may not be given one, since 30 would be 0.30 CNY and 30 KRW alike."""
        return not self.fixed_minor or bool(self.fixed_minor_by_currency)

    def for_currency(self, currency: str) -> FeePlan:
        """The plan a new payment in `currency` carries: this plan with the fixed part of
        that currency only.

        Raises CurrencyNotPriced when the plan sets no fixed fee for `currency` (a plan
        without any fixed part prices every currency).
        """
        if not self.fixed_minor_by_currency and not self.fixed_minor:
            return self
        if currency not in self.fixed_minor_by_currency:
            priced = ", ".join(sorted(self.fixed_minor_by_currency)) or "none"
            raise CurrencyNotPriced(
                f"the fee plan sets no fixed fee in {currency} (currencies priced: {priced})"
            )
        return FeePlan(
            basis_points=self.basis_points,
            fixed_minor_by_currency={currency: self.fixed_minor_by_currency[currency]},
        )

    def fixed_minor_for(self, currency: str) -> int:
        """The fixed part of the fee on a payment in `currency`, in its minor units.

        The currency's own entry; for a plan without entries, `fixed_minor` (0 for a plan
        without a fixed part; for a payment recorded before fixed fees were per currency,
        what it was charged in its own currency). Raises CurrencyNotPriced otherwise.
        """
        if currency in self.fixed_minor_by_currency:
            return self.fixed_minor_by_currency[currency]
        if not self.fixed_minor_by_currency:
            return self.fixed_minor
        raise CurrencyNotPriced(f"the fee plan sets no fixed fee in {currency}")

    def fee_minor(self, amount_minor: int, currency: str) -> int:
        """The fee on a positive `amount_minor` of `currency`: `fixed_minor_for(currency)
        + round_half_even(amount_minor * basis_points / 10000)`, capped at the amount (the
        ledger's rule, documented with `services.ledger.domain.fee_for`; contracts use it
        to check what a payment can share out). Raises CurrencyNotPriced like
        `fixed_minor_for`."""
        proportional_minor = divide_round_half_even(
            amount_minor * self.basis_points, BASIS_POINTS_PER_UNIT
        )
        return min(self.fixed_minor_for(currency) + proportional_minor, amount_minor)


class NextAction(Contract):
    """What the payer must do next to complete a payment."""

    type: Literal["redirect_to_url"] = "redirect_to_url"
    url: str = Field(min_length=1, max_length=2048)
    qr_code: str | None = Field(default=None, max_length=2048)


class Failure(Contract):
    """Why something failed, with a stable machine-readable code."""

    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=1024)
    rule_ids: tuple[str, ...] = ()
