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
from schemas.payments import CreatePayment, PaymentFailed, PaymentSucceeded
from schemas.risk import RiskDecisionMade
from services.common.clock import Clock
from services.common.decisions import Decision
from services.common.event_store import load_stream, record_decision
from services.common.metrics import PAYMENTS_FINISHED
from services.payment_center import domain

log = structlog.get_logger(__name__)

PRODUCER = "payment_center"

FINAL_EVENTS: dict[type[Event], str] = {PaymentSucceeded: "succeeded", PaymentFailed: "failed"}

# Which pure decision each input message leads to.
DECIDERS: dict[type[Message], Callable[[domain.Payment | None, Any], Decision]] = {
    CreatePayment: domain.create_payment,
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
    await record_decision(
        connection,
        decision,
        stream_id=payment_id,
        expected_version=state.version if state else 0,
        merchant_id=message.merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=message,
    )
    for emit in decision.events:
        if emit.event_type in FINAL_EVENTS:
            # Counted before the commit: a rare retry after a failed commit counts twice.
            PAYMENTS_FINISHED.labels(
                emit.payload.channel.value,  # type: ignore[attr-defined]
                FINAL_EVENTS[emit.event_type],
            ).inc()
    log.info(
        "payment_decided",
        payment_id=payment_id,
        events=[emit.event_type.__name__ for emit in decision.events],
    )
