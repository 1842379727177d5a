"""Wiring of the payment_center process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

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

        batch_size_max = center_settings.expiry_batch_size_max
        poll_s = center_settings.expiry_poll_interval_ms / 1000
        context.background.extend(
            [
                _polling_loop(
                    "expire_payments",
                    lambda: handlers.expire_due_payments(
                        context.pool, context.clock, batch_size_max
                    ),
                    batch_size_max,
                    poll_s,
                ),
                _polling_loop(
                    "query_stuck_payments",
                    lambda: handlers.query_stuck_payments(
                        context.pool,
                        context.clock,
                        center_settings.channel_query_schedule_ms,
                        batch_size_max,
                    ),
                    batch_size_max,
                    poll_s,
                ),
                _polling_loop(
                    "retry_refused_refunds",
                    lambda: handlers.retry_due_refunds(
                        context.pool,
                        context.clock,
                        center_settings.automatic_refund_retry_schedule_ms,
                        batch_size_max,
                    ),
                    batch_size_max,
                    poll_s,
                ),
            ]
        )

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


def _polling_loop(
    name: str,
    one_round: Callable[[], Awaitable[int]],
    batch_size_max: int,
    poll_s: float,
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A background loop (named `name` for the supervisor) that runs bounded rounds for
    the life of the process: at once again after a full round, else after `poll_s`. A
    round that fails for a passing reason (a concurrent writer, the database away) is
    tried again at the next tick."""

    async def loop() -> None:
        while True:
            try:
                handled = await one_round()
            except TRANSIENT_ERRORS as error:
                log.warning(f"{name}_round_failed", error=repr(error))
                handled = 0
            if handled < batch_size_max:
                await asyncio.sleep(poll_s)

    loop.__name__ = name
    return loop
