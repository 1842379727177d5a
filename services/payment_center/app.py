"""Wiring of the payment_center process."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from schemas import Topic
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.payment_center import handlers
from services.payment_center.settings import PaymentCenterSettings


async def wire(context: ServiceContext) -> None:
    decide = partial(handlers.decide_payment, clock=context.clock)
    for topic in (Topic.PAYMENTS_COMMANDS, Topic.RISK_DECISIONS, Topic.CHANNEL_RESULTS):
        context.consume(topic, {cls: decide for cls in handlers.DECIDERS if cls.topic is topic})


def create_app(
    settings: PaymentCenterSettings | None = None, clock: Clock | None = None
) -> FastAPI:
    return create_service_app(
        "payment_center", settings or PaymentCenterSettings(), wiring=wire, clock=clock
    )
