"""Wiring of the payment_center process."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from schemas import Topic
from schemas.channels import ChannelPaymentPrepared, ChannelPaymentRejected, ChannelPaymentSucceeded
from schemas.payments import CreatePayment
from schemas.risk import RiskDecisionMade
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.payment_center import handlers
from services.payment_center.settings import PaymentCenterSettings


async def wire(context: ServiceContext) -> None:
    clock = context.clock
    context.consume(
        Topic.PAYMENTS_COMMANDS, {CreatePayment: partial(handlers.create_payment, clock=clock)}
    )
    context.consume(
        Topic.RISK_DECISIONS,
        {RiskDecisionMade: partial(handlers.apply_risk_decision, clock=clock)},
    )
    context.consume(
        Topic.CHANNEL_RESULTS,
        {
            ChannelPaymentPrepared: partial(handlers.apply_channel_prepared, clock=clock),
            ChannelPaymentRejected: partial(handlers.apply_channel_rejected, clock=clock),
            ChannelPaymentSucceeded: partial(handlers.apply_channel_succeeded, clock=clock),
        },
    )


def create_app(
    settings: PaymentCenterSettings | None = None, clock: Clock | None = None
) -> FastAPI:
    return create_service_app(
        "payment_center", settings or PaymentCenterSettings(), wiring=wire, clock=clock
    )
