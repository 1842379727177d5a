"""Payment commands and events. payment_center owns the payment aggregate."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.common import Channel, Failure, FeePlan, NextAction
from schemas.envelope import Command, Contract, Event
from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.topics import Topic


class PaymentTerms(Contract):
    """What was asked for: the facts fixed when a payment is created."""

    order_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    channel: Channel
    description: str = Field(default="", max_length=1000)
    fee_plan: FeePlan


class PaymentRequest(PaymentTerms):
    """A new payment: its terms and when it expires if it is still unpaid."""

    expires_at: AwareDatetime | None = Field(
        default=None, description="None for payments created before expiry existed."
    )


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
