"""Turning channel interactions into channel-result events.

`submit_channel_payment` consumes payment_center's SubmitChannelPayment command and asks
the channel for a trade; `record_channel_notification` turns a verified, signed channel
notification into ChannelPaymentSucceeded. Both write to the gateway's event store,
stream = payment id, so results reach payment_center through the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
import structlog

from schemas.channels import (
    ChannelPaymentPrepared,
    ChannelPaymentPreparedPayload,
    ChannelPaymentRejected,
    ChannelPaymentRejectedPayload,
    ChannelPaymentSucceeded,
    ChannelPaymentSucceededPayload,
    CloseChannelTrade,
    QueryChannelPayment,
    SubmitChannelPayment,
)
from schemas.common import Channel, Failure, NextAction
from services.common.clock import Clock
from services.common.consumer import TransientError
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision, stream_version
from services.gateway.channels.base import (
    ChannelAdapter,
    ChannelRejected,
    ChannelUnavailable,
    VerifiedPaymentNotification,
)

log = structlog.get_logger(__name__)

PRODUCER = "gateway"


async def submit_channel_payment(
    connection: asyncpg.Connection,
    command: SubmitChannelPayment,
    *,
    channels: Mapping[Channel, ChannelAdapter],
    clock: Clock,
) -> None:
    """Create the channel trade and record what the payer must do next.

    Raises TransientError when the channel is unreachable, so the command is retried;
    channels treat our payment id as their idempotency key, so a retry creates no
    second trade.
    """
    payment_id = command.aggregate_id
    version = await stream_version(connection, payment_id)
    if version > 0:
        log.info("channel_submission_already_recorded", payment_id=payment_id)
        return
    request = command.payload
    adapter = channels.get(request.channel)
    if adapter is None:
        decision = Decision(
            events=(
                Emit(
                    ChannelPaymentRejected,
                    ChannelPaymentRejectedPayload(
                        channel=request.channel,
                        failure=Failure(
                            code="channel_unsupported",
                            message=f"channel {request.channel.value} is not available",
                        ),
                    ),
                ),
            )
        )
    else:
        try:
            trade = await adapter.prepare(
                payment_id=payment_id,
                amount_minor=request.amount_minor,
                currency=request.currency,
                description=request.description or request.order_id,
            )
        except ChannelUnavailable as error:
            raise TransientError(f"channel {request.channel.value} unavailable: {error}") from error
        except ChannelRejected as error:
            decision = Decision(
                events=(
                    Emit(
                        ChannelPaymentRejected,
                        ChannelPaymentRejectedPayload(
                            channel=request.channel,
                            failure=Failure(code=f"channel_{error.code}", message=error.message),
                        ),
                    ),
                )
            )
        else:
            decision = Decision(
                events=(
                    Emit(
                        ChannelPaymentPrepared,
                        ChannelPaymentPreparedPayload(
                            channel=request.channel,
                            channel_trade_id=trade.channel_trade_id,
                            next_action=NextAction(url=trade.pay_url, qr_code=trade.qr_code),
                        ),
                    ),
                )
            )
    await record_decision(
        connection,
        decision,
        stream_id=payment_id,
        expected_version=0,
        merchant_id=command.merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=command,
    )


async def close_channel_trade(
    connection: asyncpg.Connection,
    command: CloseChannelTrade,
    *,
    channels: Mapping[Channel, ChannelAdapter],
) -> None:
    """Close the channel's trade of a canceled or expired payment, so the payer can no
    longer pay it.

    Raises TransientError when the channel is unreachable (the command is retried). A
    trade the payer already paid cannot be closed: the channel's success notification
    reaches payment_center as a late payment.
    """
    adapter = channels.get(command.payload.channel)
    if adapter is None:
        return
    try:
        await adapter.close(payment_id=command.aggregate_id)
    except ChannelUnavailable as error:
        raise TransientError(f"channel {command.payload.channel.value}: {error}") from error
    except ChannelRejected as error:
        log.warning(
            "channel_trade_not_closed",
            payment_id=command.aggregate_id,
            code=error.code,
            reason=command.payload.reason,
        )
        return
    log.info("channel_trade_closed", payment_id=command.aggregate_id, reason=command.payload.reason)


async def query_channel_payment(
    connection: asyncpg.Connection,
    command: QueryChannelPayment,
    *,
    channels: Mapping[Channel, ChannelAdapter],
    clock: Clock,
) -> None:
    """Ask the channel about a payment whose notification is overdue, and record a paid
    trade exactly as a notification would be recorded (once, whichever comes first).

    Raises TransientError when the channel is unreachable.
    """
    adapter = channels.get(command.payload.channel)
    if adapter is None:
        return
    try:
        paid = await adapter.query(payment_id=command.aggregate_id)
    except ChannelUnavailable as error:
        raise TransientError(f"channel {command.payload.channel.value}: {error}") from error
    if paid is None:
        log.info("channel_query_unpaid", payment_id=command.aggregate_id)
        return
    recorded = await record_channel_notification(
        connection, command.payload.channel, paid, clock=clock
    )
    log.info("channel_query_paid", payment_id=command.aggregate_id, recorded=recorded)


class UnknownChannelTrade(Exception):
    """A correctly signed notification for a trade the gateway never prepared."""


async def record_channel_notification(
    connection: asyncpg.Connection,
    channel: Channel,
    notification: VerifiedPaymentNotification,
    *,
    clock: Clock,
) -> bool:
    """Record a verified success notification once. Returns False for a duplicate.

    Raises UnknownChannelTrade when no trade was prepared for the payment, and
    ConcurrencyConflict when a concurrent notification recorded first (the channel
    retries, and the retry is then a duplicate).
    """
    first_time = await connection.fetchval(
        "INSERT INTO channel_notifications (notification_id, channel, payment_id)"
        " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
        notification.notification_id,
        channel.value,
        notification.payment_id,
    )
    if not first_time:
        return False
    prepared = await connection.fetchrow(
        "SELECT merchant_id, correlation_id, body->'payload'->>'channel_trade_id' AS trade_id"
        " FROM event_store WHERE stream_id = $1 AND message_type = 'ChannelPaymentPrepared'",
        notification.payment_id,
    )
    if prepared is None or prepared["trade_id"] != notification.channel_trade_id:
        raise UnknownChannelTrade(
            f"no {channel.value} trade {notification.channel_trade_id} for"
            f" payment {notification.payment_id}"
        )
    payload = ChannelPaymentSucceededPayload(
        channel=channel,
        channel_trade_id=notification.channel_trade_id,
        amount_minor=notification.amount_minor,
        currency=notification.currency,
        paid_at=notification.paid_at,
        notification_id=notification.notification_id,
    )
    await record_decision(
        connection,
        Decision(events=(Emit(ChannelPaymentSucceeded, payload),)),
        stream_id=notification.payment_id,
        expected_version=await stream_version(connection, notification.payment_id),
        merchant_id=prepared["merchant_id"],
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=prepared["correlation_id"],
    )
    return True
