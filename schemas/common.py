"""Value objects shared by several contracts."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from schemas.envelope import Contract
from schemas.money import NonNegativeAmountMinor


class Channel(StrEnum):
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"
    CARD = "card"


BasisPoints = Annotated[int, Field(strict=True, ge=0, le=10_000)]


class FeePlan(Contract):
    """A channel's price for one merchant: basis points of the amount plus a fixed part."""

    basis_points: BasisPoints
    fixed_minor: NonNegativeAmountMinor


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
