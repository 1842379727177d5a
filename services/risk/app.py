"""Wiring of the risk process."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from schemas import Topic
from schemas.merchants import MerchantOnboarded, MerchantUpdated
from schemas.payments import PaymentCreated
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.risk import handlers
from services.risk.settings import RiskSettings


def create_app(settings: RiskSettings | None = None, clock: Clock | None = None) -> FastAPI:
    risk_settings = settings or RiskSettings()

    async def wire(context: ServiceContext) -> None:
        context.consume(
            Topic.MERCHANTS_EVENTS,
            {
                MerchantOnboarded: handlers.record_merchant_limits,
                MerchantUpdated: handlers.record_merchant_limits,
            },
        )
        context.consume(
            Topic.PAYMENTS_EVENTS,
            {
                PaymentCreated: partial(
                    handlers.decide_payment,
                    clock=context.clock,
                    default_single_payment_limit_minor=(
                        risk_settings.default_single_payment_limit_minor
                    ),
                )
            },
        )

    return create_service_app(
        "risk",
        risk_settings,
        migration_packages=["services.risk.migrations"],
        wiring=wire,
        clock=clock,
    )
