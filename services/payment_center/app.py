"""Wiring of the payment_center process."""

from __future__ import annotations

import asyncio
from functools import partial

import structlog
from fastapi import FastAPI, Request

from schemas import Topic
from services.common.clock import Clock
from services.common.errors import TRANSIENT_ERRORS
from services.common.service import ServiceContext, create_service_app
from services.payment_center import handlers
from services.payment_center.settings import PaymentCenterSettings

log = structlog.get_logger(__name__)


def create_app(
    settings: PaymentCenterSettings | None = None, clock: Clock | None = None
) -> FastAPI:
    center_settings = settings or PaymentCenterSettings()

    async def wire(context: ServiceContext) -> None:
        decide = partial(
            handlers.decide_payment,
            clock=context.clock,
            query_schedule_ms=tuple(center_settings.channel_query_schedule_ms),
        )
        for topic in (Topic.PAYMENTS_COMMANDS, Topic.RISK_DECISIONS, Topic.CHANNEL_RESULTS):
            context.consume(topic, {cls: decide for cls in handlers.DECIDERS if cls.topic is topic})

        async def expire_payments() -> None:
            # Bounded rounds for the life of the process; a failed round (a concurrent
            # writer, the database away) is simply tried again at the next tick.
            while True:
                try:
                    expired = await handlers.expire_due_payments(
                        context.pool, context.clock, center_settings.expiry_batch_size_max
                    )
                except TRANSIENT_ERRORS as error:
                    log.warning("expiry_round_failed", error=repr(error))
                    expired = 0
                if expired < center_settings.expiry_batch_size_max:
                    await asyncio.sleep(center_settings.expiry_poll_interval_ms / 1000)

        async def query_stuck_payments() -> None:
            while True:
                try:
                    queried = await handlers.query_stuck_payments(
                        context.pool,
                        context.clock,
                        center_settings.channel_query_schedule_ms,
                        center_settings.expiry_batch_size_max,
                    )
                except TRANSIENT_ERRORS as error:
                    log.warning("channel_query_round_failed", error=repr(error))
                    queried = 0
                if queried < center_settings.expiry_batch_size_max:
                    await asyncio.sleep(center_settings.expiry_poll_interval_ms / 1000)

        async def retry_refused_refunds() -> None:
            while True:
                try:
                    retried = await handlers.retry_due_refunds(
                        context.pool,
                        context.clock,
                        center_settings.automatic_refund_retry_schedule_ms,
                        center_settings.expiry_batch_size_max,
                    )
                except TRANSIENT_ERRORS as error:
                    log.warning("refund_retry_round_failed", error=repr(error))
                    retried = 0
                if retried < center_settings.expiry_batch_size_max:
                    await asyncio.sleep(center_settings.expiry_poll_interval_ms / 1000)

        context.background.extend([expire_payments, query_stuck_payments, retry_refused_refunds])

    app = FastAPI(title="payrail payment_center")

    @app.get("/internal/v1/automatic_refunds")
    async def automatic_refunds(request: Request, limit: int = 100) -> list[dict[str, object]]:
        """Refused automatic refunds still owed to payers: waiting for their next attempt,
        or exhausted (an operator must act)."""
        pool = request.app.state.context.pool
        return await handlers.automatic_refunds_waiting(pool, max(1, min(limit, 1_000)))

    return create_service_app(
        "payment_center",
        center_settings,
        migration_packages=["services.payment_center.migrations"],
        wiring=wire,
        clock=clock,
        app=app,
    )
