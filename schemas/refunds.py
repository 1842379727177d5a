"""Refund commands and events. A refund belongs to its payment: payment_center records
every refund fact in the payment's stream, so the refundable amount is decided under the
payment's optimistic concurrency and can never be exceeded, concurrent requests included.

Refund lifecycle: requested (money not yet back) -> succeeded | failed. A refused request
(`RefundRefused`) never becomes a refund. A failed refund frees its amount: it may be
requested again as a new refund.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.common import Channel, Failure
from schemas.envelope import Command, Contract, Event
from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.topics import Topic

_REFUND_NAMESPACE = uuid.UUID("0b7f3c52-8c1e-4f7a-a2a4-51d36a1f9e07")

RefundId = str


def new_refund_id() -> str:
    return f"re_{uuid.uuid4().hex}"


def derived_refund_id(payment_id: str, cause: str) -> str:
    """The id of a refund payrail starts by itself (a late payment, a cancelled order):
    the same for every redelivery of its cause, so it is requested once."""
    return f"re_{uuid.uuid5(_REFUND_NAMESPACE, f'{payment_id}/{cause}').hex}"


class RefundInitiator(StrEnum):
    MERCHANT = "merchant"
    ORDER_CANCELLED = "order_cancelled"
    PAID_AFTER_CLOSE = "paid_after_close"


class RefundRequest(Contract):
    """A merchant's (or payrail's) request to give money back. No amount means all that
    is still refundable."""

    refund_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor | None = None
    reason: str = Field(default="requested_by_customer", min_length=1, max_length=200)
    initiator: RefundInitiator = RefundInitiator.MERCHANT


class RequestRefund(Command):
    topic: ClassVar[Topic] = Topic.PAYMENTS_COMMANDS
    command_type: Literal["RequestRefund"] = "RequestRefund"
    schema_version: Literal[1] = 1
    payload: RefundRequest


class RefundTerms(Contract):
    """The facts of one refund, repeated by every event about it."""

    refund_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    channel: Channel
    reason: str = Field(min_length=1, max_length=200)
    initiator: RefundInitiator
    order_id: str = Field(min_length=1, max_length=128)


class RefundRequested(Event):
    """The refund was accepted against the payment's refundable amount and sent to the
    channel; the money is not back yet."""

    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["RefundRequested"] = "RefundRequested"
    schema_version: Literal[1] = 1
    payload: RefundTerms


class RefundRefusedPayload(Contract):
    refund_id: str = Field(min_length=1, max_length=128)
    requested_amount_minor: PositiveAmountMinor | None
    refundable_amount_minor: int = Field(strict=True, ge=0)
    failure: Failure


class RefundRefused(Event):
    """A refund request the payment could not accept (nothing paid, more than refundable)."""

    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["RefundRefused"] = "RefundRefused"
    schema_version: Literal[1] = 1
    payload: RefundRefusedPayload


class RefundSucceededPayload(RefundTerms):
    channel_refund_id: str = Field(min_length=1, max_length=128)
    succeeded_at: AwareDatetime


class RefundSucceeded(Event):
    """The channel gave the money back to the payer."""

    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["RefundSucceeded"] = "RefundSucceeded"
    schema_version: Literal[1] = 1
    payload: RefundSucceededPayload


class RefundFailedPayload(RefundTerms):
    failure: Failure


class RefundFailed(Event):
    """The channel could not refund; the amount is refundable again."""

    topic: ClassVar[Topic] = Topic.PAYMENTS_EVENTS
    event_type: Literal["RefundFailed"] = "RefundFailed"
    schema_version: Literal[1] = 1
    payload: RefundFailedPayload


class SubmitChannelRefundPayload(Contract):
    refund_id: str = Field(min_length=1, max_length=128)
    channel: Channel
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    reason: str = Field(min_length=1, max_length=200)


class SubmitChannelRefund(Command):
    """Ask the channel to refund; aggregate id = payment id."""

    topic: ClassVar[Topic] = Topic.CHANNEL_COMMANDS
    command_type: Literal["SubmitChannelRefund"] = "SubmitChannelRefund"
    schema_version: Literal[1] = 1
    payload: SubmitChannelRefundPayload


class QueryChannelRefundPayload(Contract):
    refund_id: str = Field(min_length=1, max_length=128)
    channel: Channel


class QueryChannelRefund(Command):
    """Ask the channel for a refund's result when no notification arrived in time."""

    topic: ClassVar[Topic] = Topic.CHANNEL_COMMANDS
    command_type: Literal["QueryChannelRefund"] = "QueryChannelRefund"
    schema_version: Literal[1] = 1
    payload: QueryChannelRefundPayload


class ChannelRefundAcceptedPayload(Contract):
    refund_id: str = Field(min_length=1, max_length=128)
    channel: Channel
    channel_refund_id: str = Field(min_length=1, max_length=128)


class ChannelRefundAccepted(Event):
    """The channel took the refund request; its result comes later."""

    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["ChannelRefundAccepted"] = "ChannelRefundAccepted"
    schema_version: Literal[1] = 1
    payload: ChannelRefundAcceptedPayload


class ChannelRefundSucceededPayload(Contract):
    refund_id: str = Field(min_length=1, max_length=128)
    channel: Channel
    channel_refund_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    succeeded_at: AwareDatetime
    notification_id: str = Field(min_length=1, max_length=128)


class ChannelRefundSucceeded(Event):
    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["ChannelRefundSucceeded"] = "ChannelRefundSucceeded"
    schema_version: Literal[1] = 1
    payload: ChannelRefundSucceededPayload


class ChannelRefundFailedPayload(Contract):
    refund_id: str = Field(min_length=1, max_length=128)
    channel: Channel
    failure: Failure


class ChannelRefundFailed(Event):
    """The channel refused the refund at once, or reported that it failed."""

    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["ChannelRefundFailed"] = "ChannelRefundFailed"
    schema_version: Literal[1] = 1
    payload: ChannelRefundFailedPayload
