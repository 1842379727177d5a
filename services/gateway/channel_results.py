"""Turning channel interactions into channel-result events.

The gateway consumes payment_center's channel commands (submit, close, query a payment;
submit, query a refund), calls the channel's adapter, and records what the channel said
as events in its own event store (stream = payment id); the outbox takes them to
payment_center. Signed channel notifications are recorded the same way, once each.

Every call goes through the channel's circuit breaker: while a channel is failing, a new
payment for it fails fast with `channel_unavailable` instead of waiting in retries, and
the payment API routes new payments to another channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeVar

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
from schemas.envelope import Contract, Event
from schemas.refunds import (
    ChannelRefundAccepted,
    ChannelRefundAcceptedPayload,
    ChannelRefundFailed,
    ChannelRefundFailedPayload,
    ChannelRefundSucceeded,
    ChannelRefundSucceededPayload,
    QueryChannelRefund,
    SubmitChannelRefund,
)
from services.common.clock import Clock
from services.common.decisions import Decision, Emit
from services.common.errors import TransientError
from services.common.event_store import record_decision, stream_version
from services.gateway.channels.base import (
    ChannelAdapter,
    ChannelNotification,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)
from services.gateway.circuit import ChannelCircuits

log = structlog.get_logger(__name__)

PRODUCER = "gateway"
# The failure code of a payment whose channel is failing (circuit open).
CHANNEL_UNAVAILABLE = "channel_unavailable"

T = TypeVar("T")


@dataclass(frozen=True)
class ChannelCalls:
    """What every channel command handler needs: the adapters, their breakers, the clock."""

    channels: Mapping[Channel, ChannelAdapter]
    circuits: ChannelCircuits
    clock: Clock


class UnknownChannelTrade(Exception):
    """A correctly signed notification for a trade or refund the gateway never started."""


async def _call(circuits: ChannelCircuits, channel: Channel, call: Awaitable[T]) -> T:
    """Await one adapter call and tell the breaker how it went. ChannelUnavailable (the
    outcome is unknown) is a failure; an answer, a refusal included, is a success."""
    try:
        result = await call
    except ChannelUnavailable:
        circuits.record_failure(channel)
        raise
    except ChannelRejected:
        circuits.record_success(channel)
        raise
    circuits.record_success(channel)
    return result


async def _record(
    connection: asyncpg.Connection,
    event_type: type[Event],
    payload: Contract,
    *,
    payment_id: str,
    merchant_id: str,
    clock: Clock,
    cause: SubmitChannelPayment | SubmitChannelRefund | None,
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


async def submit_channel_payment(
    connection: asyncpg.Connection,
    command: SubmitChannelPayment,
    *,
    calls: ChannelCalls,
) -> None:
    """Create the channel trade and record what the payer must do next, or, for a channel
    that answers at once (cards), that the payment was paid.

    Raises TransientError when the channel is unreachable and its circuit is still
    closed, so the command is retried; channels treat our payment id as their
    idempotency key, so a retry creates no second trade. With the circuit open the
    payment fails at once with `channel_unavailable`.
    """
    channels, circuits, clock = calls.channels, calls.circuits, calls.clock
    payment_id = command.aggregate_id
    if await stream_version(connection, payment_id) > 0:
        log.info("channel_submission_already_recorded", payment_id=payment_id)
        return
    request = command.payload
    adapter = channels.get(request.channel)

    async def reject(code: str, message: str) -> None:
        rejected = ChannelPaymentRejectedPayload(
            channel=request.channel, failure=Failure(code=code, message=message)
        )
        await _record(
            connection,
            ChannelPaymentRejected,
            rejected,
            payment_id=payment_id,
            merchant_id=command.merchant_id,
            clock=clock,
            cause=command,
        )

    if adapter is None:
        await reject("channel_unsupported", f"channel {request.channel.value} is not available")
        return
    if not circuits.allows(request.channel):
        await reject(CHANNEL_UNAVAILABLE, f"channel {request.channel.value} is failing")
        return
    try:
        result = await _call(
            circuits,
            request.channel,
            adapter.prepare(
                payment_id=payment_id,
                amount_minor=request.amount_minor,
                currency=request.currency,
                description=request.description or request.order_id,
            ),
        )
    except ChannelUnavailable as error:
        raise TransientError(f"channel {request.channel.value} unavailable: {error}") from error
    except ChannelRejected as error:
        await reject(f"channel_{error.code}"[:64], error.message)
        return
    if isinstance(result, VerifiedPaymentNotification):
        await _claim_notification(connection, request.channel, result.notification_id, payment_id)
        paid = _succeeded_payload(request.channel, result)
        await _record(
            connection,
            ChannelPaymentSucceeded,
            paid,
            payment_id=payment_id,
            merchant_id=command.merchant_id,
            clock=clock,
            cause=command,
        )
        return
    prepared = ChannelPaymentPreparedPayload(
        channel=request.channel,
        channel_trade_id=result.channel_trade_id,
        next_action=NextAction(url=result.pay_url, qr_code=result.qr_code),
    )
    await _record(
        connection,
        ChannelPaymentPrepared,
        prepared,
        payment_id=payment_id,
        merchant_id=command.merchant_id,
        clock=clock,
        cause=command,
    )


async def close_channel_trade(
    connection: asyncpg.Connection,
    command: CloseChannelTrade,
    *,
    calls: ChannelCalls,
) -> None:
    """Close the channel's trade of a canceled or expired payment, so the payer can no
    longer pay it.

    Raises TransientError when the channel is unreachable (the command is retried). A
    trade the payer already paid cannot be closed: the channel's success notification
    reaches payment_center as a late payment, which is refunded.
    """
    channel = command.payload.channel
    adapter = calls.channels.get(channel)
    if adapter is None:
        return
    try:
        await _call(calls.circuits, channel, adapter.close(payment_id=command.aggregate_id))
    except ChannelUnavailable as error:
        raise TransientError(f"channel {channel.value}: {error}") from error
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
    calls: ChannelCalls,
) -> None:
    """Ask the channel about a payment whose notification is overdue, and record a paid
    trade exactly as a notification would be recorded (once, whichever comes first).

    Raises TransientError when the channel is unreachable.
    """
    channel = command.payload.channel
    adapter = calls.channels.get(channel)
    if adapter is None:
        return
    try:
        paid = await _call(calls.circuits, channel, adapter.query(payment_id=command.aggregate_id))
    except ChannelUnavailable as error:
        raise TransientError(f"channel {channel.value}: {error}") from error
    if paid is None:
        log.info("channel_query_unpaid", payment_id=command.aggregate_id)
        return
    recorded = await record_channel_notification(connection, channel, paid, clock=calls.clock)
    log.info("channel_query_paid", payment_id=command.aggregate_id, recorded=recorded)


async def submit_channel_refund(
    connection: asyncpg.Connection,
    command: SubmitChannelRefund,
    *,
    calls: ChannelCalls,
) -> None:
    """Send a refund to the channel and record that it was accepted, or that the channel
    refused it (a failed refund, whose amount becomes refundable again).

    Raises TransientError while the channel is unreachable: a refund owed to a payer is
    never dropped, it waits for the channel (the refund id is the channel's idempotency
    key, so a retry refunds once).
    """
    channels, circuits, clock = calls.channels, calls.circuits, calls.clock
    payment_id = command.aggregate_id
    request = command.payload
    if await _refund_recorded(connection, payment_id, request.refund_id):
        log.info("channel_refund_already_recorded", refund_id=request.refund_id)
        return
    adapter = channels.get(request.channel)
    if adapter is None:
        failure = Failure(
            code="channel_unsupported", message=f"channel {request.channel.value} is not available"
        )
        await _record_refund_failure(connection, command, failure, clock)
        return
    try:
        accepted = await _call(
            circuits,
            request.channel,
            adapter.refund(
                payment_id=payment_id,
                refund_id=request.refund_id,
                amount_minor=request.amount_minor,
                currency=request.currency,
                reason=request.reason,
            ),
        )
    except ChannelUnavailable as error:
        raise TransientError(f"channel {request.channel.value}: {error}") from error
    except ChannelRejected as error:
        failure = Failure(code=f"channel_{error.code}"[:64], message=error.message)
        await _record_refund_failure(connection, command, failure, clock)
        return
    payload = ChannelRefundAcceptedPayload(
        refund_id=request.refund_id,
        channel=request.channel,
        channel_refund_id=accepted.channel_refund_id,
    )
    await _record(
        connection,
        ChannelRefundAccepted,
        payload,
        payment_id=payment_id,
        merchant_id=command.merchant_id,
        clock=clock,
        cause=command,
    )


async def _record_refund_failure(
    connection: asyncpg.Connection, command: SubmitChannelRefund, failure: Failure, clock: Clock
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


async def _refund_recorded(connection: asyncpg.Connection, payment_id: str, refund_id: str) -> bool:
    found = await connection.fetchval(
        "SELECT true FROM event_store WHERE stream_id = $1"
        " AND message_type IN ('ChannelRefundAccepted', 'ChannelRefundFailed')"
        " AND body->'payload'->>'refund_id' = $2 LIMIT 1",
        payment_id,
        refund_id,
    )
    return bool(found)


async def query_channel_refund(
    connection: asyncpg.Connection,
    command: QueryChannelRefund,
    *,
    calls: ChannelCalls,
) -> None:
    """Ask the channel for a refund's result when no notification arrived in time, and
    record it exactly as a notification would be (once, whichever comes first)."""
    channel = command.payload.channel
    adapter = calls.channels.get(channel)
    if adapter is None:
        return
    try:
        result = await _call(
            calls.circuits,
            channel,
            adapter.query_refund(
                payment_id=command.aggregate_id, refund_id=command.payload.refund_id
            ),
        )
    except ChannelUnavailable as error:
        raise TransientError(f"channel {channel.value}: {error}") from error
    if result is None:
        log.info("channel_refund_query_pending", refund_id=command.payload.refund_id)
        return
    recorded = await record_channel_notification(connection, channel, result, clock=calls.clock)
    log.info("channel_refund_queried", refund_id=command.payload.refund_id, recorded=recorded)


async def _claim_notification(
    connection: asyncpg.Connection, channel: Channel, notification_id: str, payment_id: str
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


def _succeeded_payload(
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
    connection: asyncpg.Connection,
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
    if not await _claim_notification(
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
    if started is None or started["trade_id"] != notification.channel_trade_id:
        raise UnknownChannelTrade(
            f"no {channel.value} trade {notification.channel_trade_id} for"
            f" payment {notification.payment_id}"
        )
    await _record(
        connection,
        ChannelPaymentSucceeded,
        _succeeded_payload(channel, notification),
        payment_id=notification.payment_id,
        merchant_id=started["merchant_id"],
        clock=clock,
        cause=None,
        correlation_id=started["correlation_id"],
    )
    return True


async def _record_refund_result(
    connection: asyncpg.Connection,
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
