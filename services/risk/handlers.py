"""risk use cases."""

from __future__ import annotations

import asyncpg
import structlog

from schemas.merchants import MerchantOnboarded, MerchantUpdated
from schemas.payments import PaymentCreated
from schemas.risk import RiskDecisionMade
from services.common.clock import Clock
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision
from services.risk import domain

log = structlog.get_logger(__name__)


async def record_merchant_limits(
    connection: asyncpg.Connection, event: MerchantOnboarded | MerchantUpdated
) -> None:
    """Keep the merchant's latest limits; events of one merchant arrive in order."""
    await connection.execute(
        "INSERT INTO merchant_limits (merchant_id, single_payment_limit_minor) VALUES ($1, $2)"
        " ON CONFLICT (merchant_id) DO UPDATE"
        " SET single_payment_limit_minor = EXCLUDED.single_payment_limit_minor, updated_at = now()",
        event.merchant_id,
        event.payload.single_payment_limit_minor,
    )


async def decide_payment(
    connection: asyncpg.Connection,
    event: PaymentCreated,
    *,
    clock: Clock,
    default_single_payment_limit_minor: int,
) -> None:
    merchant_limit: int | None = await connection.fetchval(
        "SELECT single_payment_limit_minor FROM merchant_limits WHERE merchant_id = $1",
        event.merchant_id,
    )
    limits = domain.RiskLimits(merchant_limit or default_single_payment_limit_minor)
    decision = domain.evaluate(event.aggregate_id, event.payload, limits)
    # The decision stream shares the payment's id, so its key keeps it in the payment's
    # partition and a redelivered PaymentCreated can never record a second decision.
    await record_decision(
        connection,
        Decision(events=(Emit(RiskDecisionMade, decision),)),
        stream_id=event.aggregate_id,
        expected_version=0,
        merchant_id=event.merchant_id,
        producer="risk",
        clock=clock,
        cause=event,
    )
    log.info(
        "risk_decided",
        payment_id=event.aggregate_id,
        outcome=decision.outcome.value,
        rules=[rule.rule_id for rule in decision.fired_rules],
    )
