"""payment_center use cases: load the payment, decide, record. One transaction each
(the inbox consumer opens it), with optimistic concurrency on the payment's version.

Every input is addressed to the payment by its aggregate id: commands carry the payment
id, and risk and the gateway record their results in streams named after the payment.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from schemas import Event, Message, new_command
from schemas.channels import (
    ChannelPaymentPrepared,
    ChannelPaymentRejected,
    ChannelPaymentSucceeded,
    QueryChannelPayment,
    QueryChannelPaymentPayload,
)
from schemas.common import Channel
from schemas.operations import ChannelDiscrepancyRecorded
from schemas.payments import (
    CancelPayment,
    CreatePayment,
    PaymentActionRequired,
    PaymentCanceled,
    PaymentCreated,
    PaymentExpired,
    PaymentFailed,
    PaymentSucceeded,
)
from schemas.refunds import (
    ChannelRefundFailed,
    ChannelRefundSucceeded,
    QueryChannelRefund,
    QueryChannelRefundPayload,
    RefundFailed,
    RefundRequested,
    RefundSucceeded,
    RequestRefund,
)
from schemas.risk import RiskDecisionMade
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import (
    enqueue_commands,
    load_stream,
    record_decision,
    stream_version,
)
from services.common.invariant import InvariantViolation
from services.common.metrics import PAYMENTS_FINISHED
from services.payment_center import domain
from services.payment_center.settings import DEFAULT_CHANNEL_QUERY_SCHEDULE_MS

log = structlog.get_logger(__name__)

PRODUCER = "payment_center"

FINAL_EVENTS: dict[type[Event], str] = {
    PaymentSucceeded: "succeeded",
    PaymentFailed: "failed",
    PaymentCanceled: "canceled",
    PaymentExpired: "expired",
}

# Which pure decision each input message leads to.
DECIDERS: dict[type[Message], Callable[[domain.Payment | None, Any], Decision]] = {
    CreatePayment: domain.create_payment,
    CancelPayment: domain.cancel_payment,
    RiskDecisionMade: domain.apply_risk_decision,
    ChannelPaymentPrepared: domain.apply_channel_prepared,
    ChannelPaymentRejected: domain.apply_channel_rejected,
    ChannelPaymentSucceeded: domain.apply_channel_succeeded,
    RequestRefund: domain.request_refund,
    ChannelRefundSucceeded: domain.apply_channel_refund_succeeded,
    ChannelRefundFailed: domain.apply_channel_refund_failed,
}


async def decide_payment(
    connection: asyncpg.Connection,
    message: Message,
    *,
    clock: Clock,
    query_schedule_ms: Sequence[int] = DEFAULT_CHANNEL_QUERY_SCHEDULE_MS,
) -> None:
    """Apply one input to its payment and record what the domain decided.

    Raises the domain's PaymentError for an input the payment refuses (the consumer
    dead-letters it) and ConcurrencyConflict when another writer moved the payment first
    (the consumer retries with the new state).
    """
    payment_id = message.aggregate_id
    state = domain.replay(await load_stream(connection, payment_id))
    # Every input acts on the payment named by its id; one that names another merchant
    # would let that merchant cancel or refund a payment not its own.
    domain.check_same_merchant(state, payment_id, message.merchant_id)
    try:
        decision = DECIDERS[type(message)](state, message.payload)  # type: ignore[union-attr]
    except domain.ChannelAmountMismatch as mismatch:
        await _record_discrepancy(connection, message, mismatch, clock)
        return
    if decision.is_empty:
        log.info("payment_input_ignored", payment_id=payment_id, status=state and state.status)
        return
    await _record(
        connection,
        state,
        decision,
        payment_id,
        message.merchant_id,
        clock,
        message,
        query_schedule_ms,
    )


async def _record_discrepancy(
    connection: Connection,
    cause: Message,
    mismatch: domain.ChannelAmountMismatch,
    clock: Clock,
) -> None:
    """Keep a channel result that contradicts the payment's terms as a discrepancy for
    operations (and reconciliation) instead of applying it; the payment is unchanged. One
    per channel notification: the same report again records nothing."""
    discrepancy = mismatch.discrepancy
    stream_id = discrepancy_stream_id(discrepancy.payment_id, discrepancy.notification_id)
    if await stream_version(connection, stream_id) > 0:
        return
    await record_decision(
        connection,
        Decision(events=(Emit(ChannelDiscrepancyRecorded, discrepancy),)),
        stream_id=stream_id,
        expected_version=0,
        merchant_id=cause.merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=cause,
    )
    log.error(
        "channel_discrepancy_recorded", payment_id=discrepancy.payment_id, error=str(mismatch)
    )


def discrepancy_stream_id(payment_id: str, notification_id: str) -> str:
    """The stream of the discrepancy one channel notification revealed (at most 128 chars)."""
    name = f"payrail:discrepancy:{payment_id}:{notification_id}"
    return f"disc_{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}"


async def _record(
    connection: Connection,
    state: domain.Payment | None,
    decision: Decision,
    payment_id: str,
    merchant_id: str,
    clock: Clock,
    cause: Message | None,
    query_schedule_ms: Sequence[int],
) -> None:
    correlation_id = None
    if cause is None:
        correlation_id = await connection.fetchval(
            "SELECT correlation_id FROM event_store WHERE stream_id = $1 AND stream_version = 1",
            payment_id,
        )
    events = await record_decision(
        connection,
        decision,
        stream_id=payment_id,
        expected_version=state.version if state else 0,
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=cause,
        correlation_id=correlation_id,
    )
    await _track_deadline(connection, state, payment_id, events, query_schedule_ms)
    for event in events:
        if type(event) in FINAL_EVENTS:
            # Counted before the commit: a rare retry after a failed commit counts twice.
            PAYMENTS_FINISHED.labels(
                event.payload.channel.value,  # type: ignore[attr-defined]
                FINAL_EVENTS[type(event)],
            ).inc()
    log.info("payment_decided", payment_id=payment_id, events=[e.event_type for e in events])


async def _track_deadline(
    connection: Connection,
    state: domain.Payment | None,
    payment_id: str,
    events: list[Event],
    query_schedule_ms: Sequence[int],
) -> None:
    """Keep the expiry deadline and the channel query schedule in step with the events:
    a payment waiting for the payer, and a refund waiting for its result, are asked about
    when no notification arrives; a final result ends the schedule."""
    for event in events:
        if isinstance(event, PaymentActionRequired) and state is not None:
            await _schedule_query(
                connection, payment_id, "", state.terms.channel, event, query_schedule_ms
            )
        elif isinstance(event, RefundRequested):
            await _schedule_query(
                connection,
                payment_id,
                event.payload.refund_id,
                event.payload.channel,
                event,
                query_schedule_ms,
            )
        elif isinstance(event, RefundSucceeded | RefundFailed):
            await connection.execute(
                "DELETE FROM channel_queries WHERE payment_id = $1 AND refund_id = $2",
                payment_id,
                event.payload.refund_id,
            )
            if (
                isinstance(event, RefundFailed)
                and event.payload.initiator in domain.AUTOMATIC_REFUND_INITIATORS
            ):
                # The payer's money: tried again on its own schedule (retry_due_refunds).
                await connection.execute(
                    "INSERT INTO refund_retries (payment_id, refund_id, attempt, failed_at,"
                    " failure_code) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    payment_id,
                    event.payload.refund_id,
                    domain.automatic_refund_attempt(event.payload.refund_id),
                    event.occurred_at,
                    event.payload.failure.code,
                )
        if isinstance(event, PaymentCreated) and event.payload.expires_at is not None:
            await connection.execute(
                "INSERT INTO payment_deadlines (payment_id, expires_at) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                payment_id,
                event.payload.expires_at,
            )
        elif type(event) in FINAL_EVENTS:
            await connection.execute(
                "DELETE FROM payment_deadlines WHERE payment_id = $1", payment_id
            )
            await connection.execute(
                "DELETE FROM channel_queries WHERE payment_id = $1 AND refund_id = ''",
                payment_id,
            )


async def _schedule_query(
    connection: Connection,
    payment_id: str,
    refund_id: str,
    channel: Channel,
    event: Event,
    query_schedule_ms: Sequence[int],
) -> None:
    await connection.execute(
        "INSERT INTO channel_queries (payment_id, refund_id, channel, due_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        payment_id,
        refund_id,
        channel.value,
        event.occurred_at + timedelta(milliseconds=query_schedule_ms[0]),
    )


async def expire_due_payments(pool: asyncpg.Pool, clock: Clock, batch_size_max: int) -> int:
    """Expire up to `batch_size_max` payments whose expiry time has passed. Returns how
    many deadlines were handled. Several workers may run: each claims its own rows."""
    now = clock.now()
    async with pool.acquire() as connection, connection.transaction():
        due = await connection.fetch(
            "SELECT payment_id FROM payment_deadlines WHERE expires_at <= $1"
            " ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            batch_size_max,
        )
        for row in due:
            payment_id = row["payment_id"]
            state = domain.replay(await load_stream(connection, payment_id))
            decision = domain.expire_payment(state, now)
            if state is not None and not decision.is_empty:
                await _record(
                    connection,
                    state,
                    decision,
                    payment_id,
                    state.merchant_id,
                    clock,
                    None,
                    DEFAULT_CHANNEL_QUERY_SCHEDULE_MS,
                )
            else:
                await connection.execute(
                    "DELETE FROM payment_deadlines WHERE payment_id = $1", payment_id
                )
    return len(due)


async def retry_due_refunds(
    pool: asyncpg.Pool, clock: Clock, schedule_ms: Sequence[int], batch_size_max: int
) -> int:
    """Try again the refused automatic refunds whose pause has passed (attempt n waits
    `schedule_ms[n-1]` after its failure). One whose attempts are used up (one more than
    the schedule's length) stays listed as exhausted for operations. Returns how many
    rows were handled."""
    now = clock.now()
    attempts_max = len(schedule_ms) + 1
    async with pool.acquire() as connection, connection.transaction():
        due = await connection.fetch(
            "SELECT payment_id, refund_id, attempt FROM refund_retries"
            " WHERE status = 'waiting' AND failed_at + make_interval(secs =>"
            "   ($2::bigint[])[least(attempt, cardinality($2::bigint[]))] / 1000.0) <= $1"
            " ORDER BY failed_at LIMIT $3 FOR UPDATE SKIP LOCKED",
            now,
            list(schedule_ms),
            batch_size_max,
        )
        for row in due:
            payment_id, refund_id = row["payment_id"], row["refund_id"]
            state = domain.replay(await load_stream(connection, payment_id))
            decision = domain.retry_automatic_refund(state, refund_id, attempts_max=attempts_max)
            if state is not None and not decision.is_empty:
                await _record(
                    connection,
                    state,
                    decision,
                    payment_id,
                    state.merchant_id,
                    clock,
                    None,
                    DEFAULT_CHANNEL_QUERY_SCHEDULE_MS,
                )
                log.info("automatic_refund_retried", payment_id=payment_id, refund_id=refund_id)
            elif row["attempt"] >= attempts_max:
                await connection.execute(
                    "UPDATE refund_retries SET status = 'exhausted'"
                    " WHERE payment_id = $1 AND refund_id = $2",
                    payment_id,
                    refund_id,
                )
                log.error("automatic_refund_exhausted", payment_id=payment_id, refund_id=refund_id)
                continue
            await connection.execute(
                "DELETE FROM refund_retries WHERE payment_id = $1 AND refund_id = $2",
                payment_id,
                refund_id,
            )
    return len(due)


async def automatic_refunds_waiting(
    connection: Connection | asyncpg.Pool, limit: int
) -> list[dict[str, object]]:
    """The refused automatic refunds waiting for another attempt or exhausted, oldest
    first: what operations look at."""
    rows = await connection.fetch(
        "SELECT payment_id, refund_id, attempt, failed_at, failure_code, status"
        " FROM refund_retries ORDER BY failed_at LIMIT $1",
        limit,
    )
    return [dict(row) for row in rows]


async def query_stuck_payments(
    pool: asyncpg.Pool, clock: Clock, query_schedule_ms: Sequence[int], batch_size_max: int
) -> int:
    """Ask the channel about payments and refunds whose notification is overdue: one
    QueryChannelPayment or QueryChannelRefund per due row, then the next query is
    scheduled, until the schedule is used up. Returns how many queries were sent."""
    now = clock.now()
    async with pool.acquire() as connection, connection.transaction():
        due = await connection.fetch(
            "SELECT payment_id, refund_id, channel, query_count FROM channel_queries"
            " WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            batch_size_max,
        )
        for row in due:
            first = await connection.fetchrow(
                "SELECT merchant_id, correlation_id FROM event_store"
                " WHERE stream_id = $1 AND stream_version = 1",
                row["payment_id"],
            )
            if first is None:
                raise InvariantViolation(f"channel query for unknown payment {row['payment_id']}")
            channel = Channel(row["channel"])
            command_type: type[QueryChannelPayment] | type[QueryChannelRefund]
            query: QueryChannelPaymentPayload | QueryChannelRefundPayload
            if row["refund_id"] == "":
                command_type, query = (
                    QueryChannelPayment,
                    QueryChannelPaymentPayload(channel=channel),
                )
            else:
                command_type = QueryChannelRefund
                query = QueryChannelRefundPayload(refund_id=row["refund_id"], channel=channel)
            command = new_command(
                command_type,
                query,
                aggregate_id=row["payment_id"],
                merchant_id=first["merchant_id"],
                producer=PRODUCER,
                issued_at=now,
                correlation_id=first["correlation_id"],
                causation_id=None,
            )
            await enqueue_commands(connection, [command])
            query_count = row["query_count"] + 1
            if query_count < len(query_schedule_ms):
                await connection.execute(
                    "UPDATE channel_queries SET query_count = $3, due_at = $4"
                    " WHERE payment_id = $1 AND refund_id = $2",
                    row["payment_id"],
                    row["refund_id"],
                    query_count,
                    now + timedelta(milliseconds=query_schedule_ms[query_count]),
                )
            else:
                await connection.execute(
                    "DELETE FROM channel_queries WHERE payment_id = $1 AND refund_id = $2",
                    row["payment_id"],
                    row["refund_id"],
                )
    return len(due)
