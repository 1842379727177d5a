"""payment_center use cases: load the payment, decide, record. One transaction each
(the inbox consumer opens it), with optimistic concurrency on the payment's version."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import structlog

from schemas import Message
from schemas.channels import ChannelPaymentPrepared, ChannelPaymentRejected, ChannelPaymentSucceeded
from schemas.payments import CreatePayment
from schemas.risk import RiskDecisionMade
from services.common.clock import Clock
from services.common.decisions import Decision
from services.common.event_store import load_stream, record_decision
from services.payment_center import domain

log = structlog.get_logger(__name__)

PRODUCER = "payment_center"


async def _decide_and_record(
    connection: asyncpg.Connection,
    payment_id: str,
    merchant_id: str,
    cause: Message,
    clock: Clock,
    decide: Callable[[domain.Payment | None], Decision],
) -> None:
    state = domain.replay(await load_stream(connection, payment_id))
    decision = decide(state)
    if decision.is_empty:
        log.info("payment_input_ignored", payment_id=payment_id, status=state and state.status)
        return
    await record_decision(
        connection,
        decision,
        stream_id=payment_id,
        expected_version=state.version if state else 0,
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=cause,
    )
    log.info(
        "payment_decided",
        payment_id=payment_id,
        events=[emit.event_type.__name__ for emit in decision.events],
    )


async def create_payment(
    connection: asyncpg.Connection, command: CreatePayment, clock: Clock
) -> None:
    await _decide_and_record(
        connection,
        command.aggregate_id,
        command.merchant_id,
        command,
        clock,
        lambda state: domain.create_payment(state, command.payload),
    )


async def apply_risk_decision(
    connection: asyncpg.Connection, event: RiskDecisionMade, clock: Clock
) -> None:
    await _decide_and_record(
        connection,
        event.payload.payment_id,
        event.merchant_id,
        event,
        clock,
        lambda state: domain.apply_risk_decision(state, event.payload),
    )


async def apply_channel_prepared(
    connection: asyncpg.Connection, event: ChannelPaymentPrepared, clock: Clock
) -> None:
    await _decide_and_record(
        connection,
        event.aggregate_id,
        event.merchant_id,
        event,
        clock,
        lambda state: domain.apply_channel_prepared(state, event.payload),
    )


async def apply_channel_rejected(
    connection: asyncpg.Connection, event: ChannelPaymentRejected, clock: Clock
) -> None:
    await _decide_and_record(
        connection,
        event.aggregate_id,
        event.merchant_id,
        event,
        clock,
        lambda state: domain.apply_channel_rejected(state, event.payload),
    )


async def apply_channel_succeeded(
    connection: asyncpg.Connection, event: ChannelPaymentSucceeded, clock: Clock
) -> None:
    await _decide_and_record(
        connection,
        event.aggregate_id,
        event.merchant_id,
        event,
        clock,
        lambda state: domain.apply_channel_succeeded(state, event.payload),
    )
