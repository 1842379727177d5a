"""Channel commands (payment_center asks) and channel results (the gateway reports).

The gateway holds the channel adapters and verifies the channels' signed callbacks;
payment_center decides what a result means for the payment.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.common import Channel, Failure, NextAction
from schemas.envelope import Command, Contract, Event
from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.topics import Topic


class SubmitChannelPaymentPayload(Contract):
    channel: Channel
    order_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    description: str = Field(default="", max_length=1000)


class SubmitChannelPayment(Command):
    topic: ClassVar[Topic] = Topic.CHANNEL_COMMANDS
    command_type: Literal["SubmitChannelPayment"] = "SubmitChannelPayment"
    schema_version: Literal[1] = 1
    payload: SubmitChannelPaymentPayload


class CloseChannelTradePayload(Contract):
    channel: Channel
    reason: str = Field(min_length=1, max_length=200)


class CloseChannelTrade(Command):
    topic: ClassVar[Topic] = Topic.CHANNEL_COMMANDS
    command_type: Literal["CloseChannelTrade"] = "CloseChannelTrade"
    schema_version: Literal[1] = 1
    payload: CloseChannelTradePayload


class QueryChannelPaymentPayload(Contract):
    channel: Channel


class QueryChannelPayment(Command):
    """Ask the channel whether a payment was paid, when no notification arrived in time."""

    topic: ClassVar[Topic] = Topic.CHANNEL_COMMANDS
    command_type: Literal["QueryChannelPayment"] = "QueryChannelPayment"
    schema_version: Literal[1] = 1
    payload: QueryChannelPaymentPayload


class ChannelPaymentPreparedPayload(Contract):
    channel: Channel
    channel_trade_id: str = Field(min_length=1, max_length=128)
    next_action: NextAction


class ChannelPaymentPrepared(Event):
    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["ChannelPaymentPrepared"] = "ChannelPaymentPrepared"
    schema_version: Literal[1] = 1
    payload: ChannelPaymentPreparedPayload


class ChannelPaymentRejectedPayload(Contract):
    channel: Channel
    failure: Failure


class ChannelPaymentRejected(Event):
    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["ChannelPaymentRejected"] = "ChannelPaymentRejected"
    schema_version: Literal[1] = 1
    payload: ChannelPaymentRejectedPayload


class ChannelPaymentSucceededPayload(Contract):
    channel: Channel
    channel_trade_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    paid_at: AwareDatetime
    notification_id: str = Field(min_length=1, max_length=128)


class ChannelPaymentSucceeded(Event):
    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["ChannelPaymentSucceeded"] = "ChannelPaymentSucceeded"
    schema_version: Literal[1] = 1
    payload: ChannelPaymentSucceededPayload
