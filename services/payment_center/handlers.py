"""payment_center use cases: load the payment, decide, record. One transaction each
(the inbox consumer opens it), with optimistic concurrency on the payment's version.

Every input is addressed to the payment by its aggregate id: commands carry the payment
id, and risk and the gateway record their results in streams named after the payment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from schemas import Event, Message
from schemas.channels import ChannelPaymentPrepared, ChannelPaymentRejected, ChannelPaymentSucceeded
from schemas.payments import (
    CancelPayment,
    CreatePayment,
    PaymentCanceled,
    PaymentCreated,
    PaymentExpired,
    PaymentFailed,
    PaymentSucceeded,
)
from schemas.risk import RiskDecisionMade
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision
from services.common.event_store import load_stream, record_decision
from services.common.metrics import PAYMENTS_FINISHED
from services.payment_center import domain

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
}


async def decide_payment(connection: asyncpg.Connection, message: Message, *, clock: Clock) -> None:
    """Apply one input to its payment and record what the domain decided.

    Raises the domain's PaymentError for an input the payment refuses (the consumer
    dead-letters it) and ConcurrencyConflict when another writer moved the payment first
    (the consumer retries with the new state).
    """
    payment_id = message.aggregate_id
    state = domain.replay(await load_stream(connection, payment_id))
    decision = DECIDERS[type(message)](state, message.payload)  # type: ignore[union-attr]
    if decision.is_empty:
        log.info("payment_input_ignored", payment_id=payment_id, status=state and state.status)
        return
    await _record(connection, state, decision, payment_id, message.merchant_id, clock, message)


async def _record(
    connection: Connection,
    state: domain.Payment | None,
    decision: Decision,
    payment_id: str,
    merchant_id: str,
    clock: Clock,
    cause: Message | None,
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
    await _track_deadline(connection, payment_id, events)
    for event in events:
        if type(event) in FINAL_EVENTS:
            # Counted before the commit: a rare retry after a failed commit counts twice.
            PAYMENTS_FINISHED.labels(
                event.payload.channel.value,  # type: ignore[attr-defined]
                FINAL_EVENTS[type(event)],
            ).inc()
    log.info("payment_decided", payment_id=payment_id, events=[e.event_type for e in events])


async def _track_deadline(connection: Connection, payment_id: str, events: list[Event]) -> None:
    for event in events:
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
                    connection, state, decision, payment_id, state.merchant_id, clock, None
                )
            else:
                await connection.execute(
                    "DELETE FROM payment_deadlines WHERE payment_id = $1", payment_id
                )
    return len(due)
