"""Request and response bodies of the public HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Channel, FeePlan
from schemas.money import CurrencyCode, PositiveAmountMinor


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreatePaymentRequest(Body):
    amount: PositiveAmountMinor = Field(description="Integer amount in minor units (cents, fen).")
    currency: CurrencyCode = Field(description="ISO 4217 code, upper case.")
    channel: Channel
    order_id: Annotated[str, Field(min_length=1, max_length=128)]
    description: Annotated[str, Field(max_length=1000)] = ""


class NextActionView(BaseModel):
    type: str
    url: str
    qr_code: str | None = None


class FailureView(BaseModel):
    code: str
    message: str
    rule_ids: list[str] = []


class PaymentEventView(BaseModel):
    id: str
    type: str
    aggregate_version: int
    occurred_at: datetime
    data: dict[str, Any]


class PaymentView(BaseModel):
    id: str
    object: str = "payment"
    merchant_id: str
    order_id: str
    amount: int
    currency: str
    channel: str
    description: str
    status: str
    next_action: NextActionView | None = None
    failure: FailureView | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class PaymentDetailView(PaymentView):
    """A payment with its event history, oldest first."""

    events: list[PaymentEventView]


class BalanceAmount(BaseModel):
    currency: str
    pending: int
    available: int


class BalanceView(BaseModel):
    object: str = "balance"
    merchant_id: str
    balances: list[BalanceAmount]


class OnboardMerchantRequest(Body):
    merchant_id: Annotated[str | None, Field(pattern=r"^mch_[a-z0-9_]{1,60}$")] = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    channels: list[Channel] = Field(default_factory=lambda: [Channel.ALIPAY], min_length=1)
    fee_plans: dict[Channel, FeePlan] = Field(
        default_factory=lambda: {Channel.ALIPAY: FeePlan(basis_points=60, fixed_minor=0)}
    )
    single_payment_limit_minor: PositiveAmountMinor | None = None


class MerchantView(BaseModel):
    id: str
    object: str = "merchant"
    name: str
    channels: list[str]
    fee_plans: dict[str, FeePlan]
    single_payment_limit_minor: int | None
    status: str


class ApiKeyView(BaseModel):
    id: str
    prefix: str
    secret: str = Field(description="Shown once; only a hash is stored.")


class OnboardedMerchantView(BaseModel):
    merchant: MerchantView
    api_key: ApiKeyView


class CreateWebhookEndpointRequest(Body):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
