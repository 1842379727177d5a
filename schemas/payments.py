"""Payment commands and events. payment_center owns the payment aggregate."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, AwareDatetime, Field, model_validator

from schemas.common import Channel, Failure, FeePlan, NextAction
from schemas.envelope import Command, Contract, Event
from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.risk import FiredRule
from schemas.topics import Topic

SPLITS_MAX = 10


class Split(Contract):
    """A share of a payment for another merchant: a marketplace's seller or a partner."""

    recipient_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    amount_minor: PositiveAmountMinor


class PaymentTerms(Contract):
    """What was asked for: the facts fixed when a payment is created.

    `splits` share the payment out: when it succeeds, each recipient's balance gets its
    amount, and the merchant keeps the gross less the fee less the shares. They never add
    up to more than the gross less the fee, and name each recipient once. `fee_plan`
    prices the payment's currency.
    """

    order_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    channel: Channel
    description: str = Field(default="", max_length=1000)
    fee_plan: FeePlan
    splits: tuple[Split, ...] = Field(default=(), max_length=SPLITS_MAX)

    @model_validator(mode="after")
    def _splits_fit_in_the_net(self) -> Self:
        # CurrencyNotPriced and SplitRefused are ValueErrors: pydantic reports them.
        check_splits(self.splits, self.amount_minor, self.currency, self.fee_plan)
        return self


class SplitRefused(ValueError):
    """Splits a payment cannot carry; `code` is stable for API errors."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_splits(
    splits: Sequence[Split], amount_minor: int, currency: str, fee_plan: FeePlan
) -> None:
    """Raise SplitRefused (`split_recipient_repeated`, `split_exceeds_available`) unless
    the shares name distinct recipients and fit in what is left after the fee; raise
    CurrencyNotPriced when `fee_plan` sets no fixed fee for `currency`."""
    recipients = [split.recipient_id for split in splits]
    if len(set(recipients)) != len(recipients):
        raise SplitRefused("split_recipient_repeated", "each recipient may be named once")
    shared = sum(split.amount_minor for split in splits)
    available = amount_minor - fee_plan.fee_minor(amount_minor, currency)
    if shared > available:
        raise SplitRefused(
            "split_exceeds_available",
            f"splits add up to {shared}, more than the {available} left after the fee",
        )


METADATA_KEYS_MAX = 20
METADATA_KEY_LENGTH_MAX = 40
METADATA_VALUE_LENGTH_MAX = 500

PayerText = Annotated[str, Field(min_length=1, max_length=128)]


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError as error:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from error
    return value


class Payer(Contract):
    """Who pays, as far as the merchant knows: what risk rules look at. All optional."""

    id: PayerText | None = None
    ip: Annotated[str, Field(max_length=45), AfterValidator(_check_ip)] | None = None
    device_id: PayerText | None = None
    card_fingerprint: PayerText | None = None


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > METADATA_KEYS_MAX:
        raise ValueError(f"metadata holds at most {METADATA_KEYS_MAX} keys")
    for key, item in value.items():
        if not 1 <= len(key) <= METADATA_KEY_LENGTH_MAX:
            raise ValueError(f"metadata keys are 1 to {METADATA_KEY_LENGTH_MAX} characters")
        if len(item) > METADATA_VALUE_LENGTH_MAX:
            raise ValueError(f"metadata values are at most {METADATA_VALUE_LENGTH_MAX} characters")
    return value


Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]


class PaymentRequest(PaymentTerms):
    """A new payment: its terms, when it expires if it is still unpaid, who pays and the
    merchant's own key-value notes."""

    expires_at: AwareDatetime | None = Field(
        default=None, description="None for payments created before expiry existed."
    )
    payer: Payer | None = None
    metadata: Metadata = Field(default_factory=dict)


class CreatePayment(Command):
    topic: ClassVar[Topic] = Topic.PAYMENTS_COMMANDS
    command_type: Literal["CreatePayment"] = "CreatePayment"
    schema_version: Literal[2] = 2
    payload: PaymentRequest


class PaymentCreated(Event):
    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentCreated"] = "PaymentCreated"
    schema_version: Literal[2] = 2
    payload: PaymentRequest


def upcast_add_expires_at(raw: dict[str, object]) -> dict[str, object]:
    """v1 of CreatePayment and PaymentCreated had no expiry: such payments never expire."""
    payload = dict(raw["payload"])  # type: ignore[call-overload]
    payload.setdefault("expires_at", None)
    return {**raw, "payload": payload, "schema_version": 2}


class CancelPaymentPayload(Contract):
    reason: str = Field(default="requested_by_merchant", min_length=1, max_length=200)
    refund_if_paid: bool = Field(
        default=False,
        description="When the payment is already paid, refund what is still refundable "
        "instead of leaving it paid (an upstream order cancelled after payment).",
    )


class CancelPayment(Command):
    topic: ClassVar[Topic] = Topic.PAYMENTS_COMMANDS
    command_type: Literal["CancelPayment"] = "CancelPayment"
    schema_version: Literal[1] = 1
    payload: CancelPaymentPayload


class PaymentCanceledPayload(PaymentTerms):
    reason: str = Field(min_length=1, max_length=200)


class PaymentCanceled(Event):
    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentCanceled"] = "PaymentCanceled"
    schema_version: Literal[1] = 1
    payload: PaymentCanceledPayload


class PaymentExpired(Event):
    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentExpired"] = "PaymentExpired"
    schema_version: Literal[1] = 1
    payload: PaymentTerms


class PaymentRiskApprovedPayload(Contract):
    risk_score: int = Field(ge=0, le=100)


class PaymentRiskApproved(Event):
    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentRiskApproved"] = "PaymentRiskApproved"
    schema_version: Literal[1] = 1
    payload: PaymentRiskApprovedPayload


class PaymentHeldForReviewPayload(Contract):
    risk_score: int = Field(ge=0, le=100)
    fired_rules: tuple[FiredRule, ...] = ()


class PaymentHeldForReview(Event):
    """Risk held the payment for a reviewer; it waits (and may expire) until one decides."""

    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentHeldForReview"] = "PaymentHeldForReview"
    schema_version: Literal[1] = 1
    payload: PaymentHeldForReviewPayload


class PaymentActionRequiredPayload(Contract):
    channel_trade_id: str = Field(min_length=1, max_length=128)
    next_action: NextAction


class PaymentActionRequired(Event):
    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentActionRequired"] = "PaymentActionRequired"
    schema_version: Literal[1] = 1
    payload: PaymentActionRequiredPayload


class PaymentSucceededPayload(PaymentTerms):
    channel_trade_id: str = Field(min_length=1, max_length=128)
    paid_at: AwareDatetime


class PaymentSucceeded(Event):
    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentSucceeded"] = "PaymentSucceeded"
    schema_version: Literal[1] = 1
    payload: PaymentSucceededPayload


class PaymentPaidAfterClosePayload(PaymentSucceededPayload):
    """The channel took the payer's money for a payment that was already over."""

    closed_status: Literal["canceled", "expired", "failed"]


class PaymentPaidAfterClose(Event):
    """Money arrived for a closed payment; it is owed back to the payer (a refund)."""

    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentPaidAfterClose"] = "PaymentPaidAfterClose"
    schema_version: Literal[1] = 1
    payload: PaymentPaidAfterClosePayload


class PaymentFailedPayload(PaymentTerms):
    failure: Failure


class PaymentFailed(Event):
    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["PaymentFailed"] = "PaymentFailed"
    schema_version: Literal[1] = 1
    payload: PaymentFailedPayload
