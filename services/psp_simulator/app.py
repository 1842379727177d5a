"""The PSP simulator's HTTP app: every simulated channel, plus fault injection.

Routes:
- the Alipay-style channel (`/alipay/...`, payer pages `/pay/...`), see `alipay/`;
- the WeChat-Pay-style channel (`/wechatpay/...`), see `wechat_pay/`;
- the card channel (`/card/...`), see `card/`;
- the bank rail that pays merchants out (`/bank/...`), see `bank/`;
- `GET /_sim/faults`, `PUT /_sim/faults/{channel}` (a channel or `bank`),
  `DELETE /_sim/faults`: the faults each channel injects (see `faults.py`);
- `GET /_sim/notifications?reference=<payment id>`: every notification attempt about it;
- `GET /healthz`.

Each rail is a package with its state (`state.py`) and its routes (`routes.py`); what they
share (faults, the notification sender, the Alipay trade store, settings) stays here. A
channel's latency and outage faults apply to every route under its path prefix, in one
middleware, so the rails only implement the faults that change what they say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from services.common.clock import Clock, SystemClock
from services.psp_simulator import alipay, bank, card, wechat_pay
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.faults import ChannelFaults, FaultBoard, channel_of_path, rail_named
from services.psp_simulator.notifier import NotificationSender
from services.psp_simulator.settings import PspSimulatorSettings


def create_app(settings: PspSimulatorSettings, *, clock: Clock | None = None) -> FastAPI:
    """Build the simulator's ASGI app; nothing connects until the lifespan starts."""
    initial_faults = ChannelFaults(
        duplicate_notifications=settings.duplicate_notify,
    )
    context = SimulatorContext(
        settings=settings,
        clock=clock if clock is not None else SystemClock(),
        faults=FaultBoard(initial_faults),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=settings.notify_concurrent_sends_max)
        timeout = httpx.Timeout(settings.notify_timeout_ms / 1000)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http_client:
            context.sender = NotificationSender(
                http_client=http_client,
                clock=context.clock,
                retry_schedule_ms=settings.notify_retry_schedule_ms,
                timeout_ms=settings.notify_timeout_ms,
                concurrent_sends_max=settings.notify_concurrent_sends_max,
                pending_count_max=settings.notify_pending_count_max,
                drop_first_count=settings.notify_drop_first_count,
            )
            try:
                yield
            finally:
                await context.sender.close()
                context.sender = None

    app = FastAPI(title="payrail PSP simulator", lifespan=lifespan)
    app.state.context = context

    @app.middleware("http")
    async def inject_channel_faults(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        channel = channel_of_path(request.url.path)
        if channel is not None:
            faults = context.faults.of(channel)
            if faults.latency_ms > 0:
                await asyncio.sleep(faults.latency_ms / 1000)
            if faults.unavailable:
                return JSONResponse({"detail": f"{channel} is unavailable"}, status_code=503)
            if request.method == "POST":
                response = await call_next(request)
                status = context.faults.take_answer_after_work(channel)
                if status is None:
                    return response
                return JSONResponse(
                    {"error": "fault_answer", "message": f"{channel} answered {status} after work"},
                    status_code=status,
                )
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_sim/faults")
    async def show_faults() -> dict[str, ChannelFaults]:
        return context.faults.snapshot()

    @app.put("/_sim/faults/{channel}")
    async def set_faults(channel: str, faults: ChannelFaults) -> ChannelFaults:
        known = rail_named(channel)
        if known is None:
            raise HTTPException(status_code=404, detail=f"unknown channel {channel}")
        context.faults.set(known, faults)
        return faults

    @app.get("/_sim/notifications")
    async def show_notification_attempts(reference: str) -> list[dict[str, object]]:
        """Every delivery attempt of the notifications about one payment (its id)."""
        sender = context.running_sender()
        return [
            {
                "key": record.key,
                "notify_id": record.notify_id,
                "attempt": record.attempt,
                "outcome": record.outcome.value,
            }
            for record in sender.attempts_about(reference)
        ]

    @app.delete("/_sim/faults", status_code=204)
    async def reset_faults() -> None:
        context.faults.reset()

    app.include_router(alipay.create_router(context))
    app.include_router(wechat_pay.create_router(context))
    app.include_router(card.create_router(context))
    app.include_router(bank.create_router(context))
    return app
