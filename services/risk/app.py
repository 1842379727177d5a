"""Wiring of the risk process: its consumers and its internal API (rules, block list,
manual review), which the gateway's admin API calls."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from schemas import Topic
from schemas.merchants import MerchantOnboarded, MerchantUpdated
from schemas.payments import (
    PaymentCanceled,
    PaymentCreated,
    PaymentExpired,
    PaymentFailed,
    PaymentSucceeded,
)
from schemas.refunds import RefundSucceeded
from schemas.risk import BlocklistChangedPayload, FiredRule, PayerKey, RiskRules
from services.common.clock import Clock
from services.common.service import ServiceContext, create_service_app
from services.risk import handlers, watch
from services.risk.locks import batch_lock_keys
from services.risk.settings import RiskSettings

router = APIRouter(prefix="/internal/v1")

MerchantId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


@router.get("/merchants/{merchant_id}/risk_rules", response_model=RiskRules)
async def get_rules(merchant_id: MerchantId, request: Request) -> Any:
    return await handlers.load_rules(_context(request).pool, merchant_id)


@router.put("/merchants/{merchant_id}/risk_rules", response_model=RiskRules)
async def put_rules(merchant_id: MerchantId, rules: RiskRules, request: Request) -> Any:
    context = _context(request)
    async with context.pool.acquire() as connection, connection.transaction():
        await handlers.set_rules(connection, merchant_id, rules, clock=context.clock)
    return rules


class BlockRequest(BaseModel):
    key: PayerKey
    value: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=500)


@router.post("/blocklist")
async def block(body: BlockRequest, request: Request) -> Response:
    context = _context(request)
    change = BlocklistChangedPayload(
        key=body.key, value=body.value, blocked=True, reason=body.reason
    )
    async with context.pool.acquire() as connection, connection.transaction():
        changed = await handlers.change_blocklist(connection, change, clock=context.clock)
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if changed else 200)


@router.delete("/blocklist", status_code=204)
async def unblock(
    key: PayerKey,
    value: Annotated[str, Query(min_length=1, max_length=128)],
    request: Request,
) -> Response:
    context = _context(request)
    change = BlocklistChangedPayload(key=key, value=value, blocked=False)
    async with context.pool.acquire() as connection, connection.transaction():
        changed = await handlers.change_blocklist(connection, change, clock=context.clock)
    if not changed:
        return JSONResponse(
            {
                "code": "blocklist_entry_not_found",
                "detail": f"{key.value} {value!r} is not blocked",
            },
            status_code=404,
        )
    return Response(status_code=204)


class ReviewView(BaseModel):
    payment_id: str
    merchant_id: str
    amount_minor: int
    currency: str
    score: int
    fired_rules: list[FiredRule]
    status: str
    reviewed_by: str | None
    created_at: datetime
    resolved_at: datetime | None


@router.get("/reviews", response_model=list[ReviewView])
async def list_reviews(request: Request, status: str = "pending", limit: int = 100) -> Any:
    rows = await _context(request).pool.fetch(
        "SELECT * FROM risk_reviews WHERE status = $1 ORDER BY created_at, payment_id LIMIT $2",
        status,
        max(1, min(limit, 500)),
    )
    return [ReviewView(**{**dict(row), "currency": row["currency"].strip()}) for row in rows]


class ResolveRequest(BaseModel):
    reviewer: str = Field(default="operations", min_length=1, max_length=128)


async def _resolve(payment_id: str, body: ResolveRequest, request: Request, approve: bool) -> Any:
    context = _context(request)
    try:
        async with context.pool.acquire() as connection, connection.transaction():
            decision = await handlers.resolve_review(
                connection, payment_id, approve=approve, reviewer=body.reviewer, clock=context.clock
            )
    except handlers.ReviewNotOpen as closed:
        status = 404 if closed.code == "review_not_found" else 409
        return JSONResponse({"code": closed.code, "detail": str(closed)}, status_code=status)
    return JSONResponse(decision.model_dump(mode="json"))


@router.post("/reviews/{payment_id}/approve")
async def approve(payment_id: str, body: ResolveRequest, request: Request) -> Any:
    return await _resolve(payment_id, body, request, approve=True)


@router.post("/reviews/{payment_id}/deny")
async def deny(payment_id: str, body: ResolveRequest, request: Request) -> Any:
    return await _resolve(payment_id, body, request, approve=False)


def create_app(settings: RiskSettings | None = None, clock: Clock | None = None) -> FastAPI:
    risk_settings = settings or RiskSettings()

    thresholds = risk_settings.alert_thresholds()

    async def wire(context: ServiceContext) -> None:
        watch_payment = partial(watch.watch_payment, clock=context.clock, thresholds=thresholds)
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
                ),
                PaymentExpired: handlers.close_review,
                PaymentCanceled: handlers.close_review,
                PaymentSucceeded: watch_payment,
                PaymentFailed: watch_payment,
                RefundSucceeded: partial(
                    watch.watch_refund, clock=context.clock, thresholds=thresholds
                ),
            },
            lock_keys=batch_lock_keys,
        )

    app = create_service_app(
        "risk",
        risk_settings,
        migration_packages=["services.risk.migrations"],
        wiring=wire,
        clock=clock,
        app=FastAPI(title="payrail risk"),
    )
    app.include_router(router)
    return app
