"""Value objects shared by several contracts."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from schemas.envelope import Contract
from schemas.money import BASIS_POINTS_PER_UNIT, NonNegativeAmountMinor, divide_round_half_even


class Channel(StrEnum):
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"
    CARD = "card"


BasisPoints = Annotated[int, Field(strict=True, ge=0, le=10_000)]


class FeePlan(Contract):
    """A channel's price for one merchant: basis points of the amount plus a fixed part."""

    basis_points: BasisPoints
    fixed_minor: NonNegativeAmountMinor

    def fee_minor(self, amount_minor: int) -> int:
        """The fee on a positive `amount_minor`: `fixed_minor + round_half_even(amount_minor
        * basis_points / 10000)`, capped at the amount (the ledger's rule, documented with
        `services.ledger.domain.fee_for`; contracts use it to check what a payment can
        share out)."""
        proportional_minor = divide_round_half_even(
            amount_minor * self.basis_points, BASIS_POINTS_PER_UNIT
        )
        return min(self.fixed_minor + proportional_minor, amount_minor)


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
