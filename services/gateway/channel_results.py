"""Turning what the channels say into channel-result events.

The connector (services/gateway/connector/) calls the channels for payment_center's
channel commands and records their answers here, as events in the gateway's event store
(stream = payment id); the outbox takes them to payment_center. Signed channel
notifications are recorded the same way, once each, whichever arrives first.
"""

from __future__ import annotations

import structlog

from schemas.channels import (
    ChannelPaymentSucceeded,
    ChannelPaymentSucceededPayload,
)
from schemas.common import Channel, Failure
from schemas.envelope import Command, Contract, Event
from schemas.refunds import (
    ChannelRefundFailed,
    ChannelRefundFailedPayload,
    ChannelRefundSucceeded,
    ChannelRefundSucceededPayload,
    SubmitChannelRefund,
)
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision, stream_version
from services.gateway.channels.base import (
    ChannelNotification,
    IgnoredNotification,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)

log = structlog.get_logger(__name__)

PRODUCER = "gateway"
# The failure code of a payment whose channel is failing (circuit open).
CHANNEL_UNAVAILABLE = "channel_unavailable"


class UnknownChannelTrade(Exception):
    """A correctly signed notification for a trade or refund the gateway never started."""


async def _record(
    connection: Connection,
    event_type: type[Event],
    payload: Contract,
    *,
    payment_id: str,
    merchant_id: str,
    clock: Clock,
    cause: Command | None,
    correlation_id: str | None = None,
) -> None:
    await record_decision(
        connection,
        Decision(events=(Emit(event_type, payload),)),
        stream_id=payment_id,
        expected_version=await stream_version(connection, payment_id),
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=cause,
        correlation_id=correlation_id,
    )


async def record_channel_result(
    connection: Connection,
    event_type: type[Event],
    payload: Contract,
    *,
    command: Command,
    clock: Clock,
) -> None:
    """Record the rail's answer to `command` on the payment's stream, caused by it."""
    await _record(
        connection,
        event_type,
        payload,
        payment_id=command.aggregate_id,
        merchant_id=command.merchant_id,
        clock=clock,
        cause=command,
    )


async def record_refund_failure(
    connection: Connection, command: SubmitChannelRefund, failure: Failure, clock: Clock
) -> None:
    payload = ChannelRefundFailedPayload(
        refund_id=command.payload.refund_id, channel=command.payload.channel, failure=failure
    )
    await _record(
        connection,
        ChannelRefundFailed,
        payload,
        payment_id=command.aggregate_id,
        merchant_id=command.merchant_id,
        clock=clock,
        cause=command,
    )


async def refund_recorded(connection: Connection, payment_id: str, refund_id: str) -> bool:
    found = await connection.fetchval(
        "SELECT true FROM event_store WHERE stream_id = $1"
        " AND message_type IN ('ChannelRefundAccepted', 'ChannelRefundFailed')"
        " AND body->'payload'->>'refund_id' = $2 LIMIT 1",
        payment_id,
        refund_id,
    )
    return bool(found)


async def claim_notification(
    connection: Connection, channel: Channel, notification_id: str, payment_id: str
) -> bool:
    """Remember a notification id; False when it was recorded before (a duplicate)."""
    first_time = await connection.fetchval(
        "INSERT INTO channel_notifications (notification_id, channel, payment_id)"
        " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
        notification_id,
        channel.value,
        payment_id,
    )
    return bool(first_time)


def succeeded_payload(
    channel: Channel, notification: VerifiedPaymentNotification
) -> ChannelPaymentSucceededPayload:
    return ChannelPaymentSucceededPayload(
        channel=channel,
        channel_trade_id=notification.channel_trade_id,
        amount_minor=notification.amount_minor,
        currency=notification.currency,
        paid_at=notification.paid_at,
        notification_id=notification.notification_id,
    )


async def record_channel_notification(
    connection: Connection,
    channel: Channel,
    notification: ChannelNotification,
    *,
    clock: Clock,
) -> bool:
    """Record a verified notification once. Returns False for a duplicate and for a
    notification that changes nothing (an earlier status arriving late).

    Raises UnknownChannelTrade when no trade (or refund) was started for it, and
    ConcurrencyConflict when a concurrent notification recorded first (the channel
    retries, and the retry is then a duplicate).
    """
    if isinstance(notification, IgnoredNotification):
        return False
    if not await claim_notification(
        connection, channel, notification.notification_id, notification.payment_id
    ):
        return False
    if isinstance(notification, VerifiedRefundNotification):
        await _record_refund_result(connection, channel, notification, clock)
        return True
    started = await connection.fetchrow(
        "SELECT merchant_id, correlation_id, body->'payload'->>'channel_trade_id' AS trade_id"
        " FROM event_store WHERE stream_id = $1"
        " AND message_type IN ('ChannelPaymentPrepared', 'ChannelPaymentSucceeded')"
        " ORDER BY stream_version LIMIT 1",
        notification.payment_id,
    )
    if started is None:
        # No trade on record yet, but its submission was sent and got no definite answer
        # (a card captured while the answer was lost): the notification is that answer.
        started = await connection.fetchrow(
            "SELECT command_body::jsonb ->> 'merchant_id' AS merchant_id,"
            " command_body::jsonb ->> 'correlation_id' AS correlation_id,"
            " $2::text AS trade_id FROM channel_operations"
            " WHERE kind = 'submit_payment' AND subject_id = $1 AND attempts > 0",
            notification.payment_id,
            notification.channel_trade_id,
        )
    if started is None or started["trade_id"] != notification.channel_trade_id:
        raise UnknownChannelTrade(
            f"no {channel.value} trade {notification.channel_trade_id} for"
            f" payment {notification.payment_id}"
        )
    await _record(
        connection,
        ChannelPaymentSucceeded,
        succeeded_payload(channel, notification),
        payment_id=notification.payment_id,
        merchant_id=started["merchant_id"],
        clock=clock,
        cause=None,
        correlation_id=started["correlation_id"],
    )
    return True


async def record_paid_trade(
    connection: Connection,
    channel: Channel,
    paid: VerifiedPaymentNotification,
    *,
    command: Command,
    clock: Clock,
) -> bool:
    """Record a payment the connector itself found paid (a query, or a close the channel
    refused because the payer paid), once. Unlike a callback it needs no recorded trade:
    the answer is about our own payment id, over our own authenticated call, and a card
    captured while its submission's answer was lost has no prepared trade on record.
    Returns False when that payment was recorded paid already."""
    if not await claim_notification(connection, channel, paid.notification_id, paid.payment_id):
        return False
    already_paid = await connection.fetchval(
        "SELECT true FROM event_store WHERE stream_id = $1"
        " AND message_type = 'ChannelPaymentSucceeded' LIMIT 1",
        paid.payment_id,
    )
    if already_paid:
        return False
    await record_channel_result(
        connection,
        ChannelPaymentSucceeded,
        succeeded_payload(channel, paid),
        command=command,
        clock=clock,
    )
    return True


async def _record_refund_result(
    connection: Connection,
    channel: Channel,
    notification: VerifiedRefundNotification,
    clock: Clock,
) -> None:
    accepted = await connection.fetchrow(
        "SELECT merchant_id, correlation_id FROM event_store WHERE stream_id = $1"
        " AND message_type = 'ChannelRefundAccepted' AND body->'payload'->>'refund_id' = $2",
        notification.payment_id,
        notification.refund_id,
    )
    if accepted is None:
        raise UnknownChannelTrade(
            f"no {channel.value} refund {notification.refund_id} for"
            f" payment {notification.payment_id}"
        )
    event_type: type[Event]
    payload: ChannelRefundSucceededPayload | ChannelRefundFailedPayload
    if notification.succeeded:
        event_type = ChannelRefundSucceeded
        payload = ChannelRefundSucceededPayload(
            refund_id=notification.refund_id,
            channel=channel,
            channel_refund_id=notification.channel_refund_id,
            amount_minor=notification.amount_minor,
            currency=notification.currency,
            succeeded_at=notification.finished_at,
            notification_id=notification.notification_id,
        )
    else:
        event_type = ChannelRefundFailed
        payload = ChannelRefundFailedPayload(
            refund_id=notification.refund_id,
            channel=channel,
            failure=Failure(
                code=f"channel_{notification.failure_code or 'refund_failed'}"[:64],
                message=notification.failure_message[:1024],
            ),
        )
    await _record(
        connection,
        event_type,
        payload,
        payment_id=notification.payment_id,
        merchant_id=accepted["merchant_id"],
        clock=clock,
        cause=None,
        correlation_id=accepted["correlation_id"],
    )
