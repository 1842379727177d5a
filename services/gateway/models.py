"""Request and response bodies of the public HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.common import Channel, FeePlan
from schemas.envelope import check_storable_text
from schemas.merchants import MerchantStatus, SettlementTerms
from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.payments import SPLITS_MAX, Metadata, Payer


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _text_is_storable(self) -> Self:
        for _, value in self:
            check_storable_text(value)
        return self


class FailureView(BaseModel):
    code: str
    message: str
    rule_ids: list[str] = []


class SplitRequest(Body):
    recipient: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The id of the merchant who gets the share."
    )
    amount: PositiveAmountMinor = Field(description="Minor units of the payment for it.")


class SplitView(BaseModel):
    recipient: str
    amount: int


class CreatePaymentRequest(Body):
    amount: PositiveAmountMinor = Field(description="Integer amount in minor units (cents, fen).")
    currency: CurrencyCode = Field(description="ISO 4217 code, upper case.")
    channel: Channel | None = Field(
        default=None, description="The one channel to use. Leave out to let payrail route."
    )
    channels: list[Channel] | None = Field(
        default=None,
        min_length=1,
        max_length=3,
        description="Channels the payment may use, in order of preference; payrail takes the "
        "first enabled one that is not failing. Leave out (with `channel`) for all the "
        "merchant's channels.",
    )
    order_id: Annotated[str, Field(min_length=1, max_length=128)]
    description: Annotated[str, Field(max_length=1000)] = ""
    payer: Payer | None = None
    metadata: Metadata = Field(default_factory=dict)
    expires_in_seconds: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=10_080 * 60,
        description="Expire sooner than the merchant's payment expiry (never later).",
    )
    splits: list[SplitRequest] = Field(
        default_factory=list,
        max_length=SPLITS_MAX,
        description="Shares of the payment for other merchants (a marketplace's sellers or "
        "partners): each gets its amount when the payment succeeds; they may add up to the "
        "amount less this merchant's fee, which this merchant pays.",
    )

    @model_validator(mode="after")
    def _one_way_to_choose_channels(self) -> Self:
        if self.channel is not None and self.channels is not None:
            raise ValueError("give `channel` or `channels`, not both")
        return self

    def channel_candidates(self) -> list[Channel]:
        if self.channel is not None:
            return [self.channel]
        return list(self.channels or [])


class CreateRefundRequest(Body):
    amount: PositiveAmountMinor | None = Field(
        default=None, description="Minor units to refund; leave out for all that is refundable."
    )
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "requested_by_customer"


class RefundView(BaseModel):
    id: str
    object: str = "refund"
    payment_id: str
    amount: int | None = Field(description="None only for a refused request without amount.")
    currency: str
    channel: str
    reason: str
    initiator: str
    status: str = Field(description="pending, succeeded, failed, or refused (never started).")
    failure: FailureView | None = None
    channel_refund_id: str | None = None
    created_at: datetime
    updated_at: datetime


class CancelPaymentRequest(Body):
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "requested_by_merchant"


class NextActionView(BaseModel):
    type: str
    url: str
    qr_code: str | None = None


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
    amount_refunded: int = 0
    metadata: dict[str, str] = Field(default_factory=dict)
    splits: list[SplitView] = Field(default_factory=list)
    expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class PaymentDetailView(PaymentView):
    """A payment with its refunds and its event history, oldest first."""

    refunds: list[RefundView]
    events: list[PaymentEventView]


class BalanceAmount(BaseModel):
    """A merchant's money in one currency, in minor units: what the platform owes it."""

    currency: str
    pending: int = Field(description="Captured, not yet settled.")
    available: int = Field(
        description="Settled and payable; negative while a refund after settlement is "
        "being recovered from later settlements."
    )
    reserve: int = Field(default=0, description="Held back against disputes and refunds.")
    in_transit: int = Field(default=0, description="Paid out, not yet confirmed by the bank.")


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
    settlement_terms: SettlementTerms = Field(default_factory=SettlementTerms)
    payment_expiry_minutes: int = Field(default=30, strict=True, ge=1, le=10_080)
    refund_on_order_cancel: bool = Field(
        default=True,
        description="An upstream OrderCancelled for a paid order refunds it (true) or not.",
    )
    webhook_url: Annotated[str | None, Field(min_length=1, max_length=2048)] = Field(
        default=None, description="Registers a webhook endpoint for every event type."
    )


class UpdateMerchantRequest(Body):
    """Fields to change; the others keep their values."""

    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    status: MerchantStatus | None = Field(default=None, description="`suspended` stops its API.")
    channels: list[Channel] | None = Field(default=None, min_length=1)
    fee_plans: dict[Channel, FeePlan] | None = None
    single_payment_limit_minor: PositiveAmountMinor | None = None
    settlement_terms: SettlementTerms | None = None
    payment_expiry_minutes: int | None = Field(default=None, strict=True, ge=1, le=10_080)
    refund_on_order_cancel: bool | None = None


class MerchantView(BaseModel):
    id: str
    object: str = "merchant"
    name: str
    status: MerchantStatus
    channels: list[Channel]
    fee_plans: dict[Channel, FeePlan]
    single_payment_limit_minor: int | None
    settlement_terms: SettlementTerms
    payment_expiry_minutes: int
    refund_on_order_cancel: bool
    version: int = Field(description="Changes with every update of the merchant.")


class ApiKeyView(BaseModel):
    id: str
    object: str = "api_key"
    merchant_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class IssuedApiKeyView(ApiKeyView):
    secret: str = Field(description="Shown once; only a hash is stored.")


class ApiKeyList(BaseModel):
    data: list[ApiKeyView]


class RotateApiKeyRequest(Body):
    grace_seconds: int = Field(
        default=0,
        strict=True,
        ge=0,
        le=7 * 86_400,
        description="How long the old key keeps working beside the new one.",
    )


class OnboardedMerchantView(BaseModel):
    merchant: MerchantView
    api_key: IssuedApiKeyView
    webhook_endpoint: dict[str, Any] | None = Field(
        default=None, description="The endpoint registered for `webhook_url`, with its secret."
    )


class CreateWebhookEndpointRequest(Body):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1)


class UpdateWebhookEndpointRequest(Body):
    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    events: list[str] | None = Field(default=None, min_length=1)
    enabled: bool | None = None


class RotateSecretRequest(Body):
    overlap_seconds: int = Field(
        default=86_400,
        ge=0,
        le=7 * 86_400,
        description="How long the old secret keeps signing next to the new one.",
    )


class ResendEventRequest(Body):
    endpoint_id: str | None = Field(
        default=None,
        pattern=r"^we_[A-Za-z0-9_]{1,64}$",
        description="Resend to this endpoint only; by default to every enabled endpoint "
        "subscribed to the event's type.",
    )


class ReplayEventsRequest(Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: AwareDatetime = Field(alias="from", description="First instant of the range.")
    end: AwareDatetime = Field(alias="to", description="End of the range, excluded.")
