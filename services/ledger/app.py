"""Wiring of the ledger process: its consumers, its routes and the shared runtime.

Nothing connects at import time: `create_app` only builds the app; the database pool,
the broker and the outbox relay start in the app's lifespan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from schemas import Event, Message, Topic
from schemas.ledger import SettlementBatchSummary
from schemas.merchants import MerchantOnboarded, MerchantUpdated
from schemas.money import CurrencyCode, SignedAmountMinor
from schemas.payouts import BankPayoutFailed, BankPayoutPaid, PayoutSummary
from schemas.statements import statement_csv
from services.common.clock import Clock
from services.common.consumer import BatchHandler, Handler
from services.common.service import ServiceContext, create_service_app
from services.ledger.adjustments import (
    Adjustment,
    AdjustmentRefused,
    post_adjustment,
    reverse_adjustment,
)
from services.ledger.domain import ENTRY_RULES
from services.ledger.handlers import BALANCES_LIMIT_MAX, post_events, read_balances
from services.ledger.payouts import record_payout_result, run_payouts
from services.ledger.settings import LedgerSettings
from services.ledger.settlement_run import (
    load_batch_lines,
    record_merchant_terms,
    run_settlements,
)
from services.ledger.transactions import router as balance_transactions_router

SERVICE_NAME = "ledger"


class AccountBalanceView(BaseModel):
    """An account's balance in one currency; debits positive, credits negative."""

    account_id: str
    currency: str
    balance_minor: int


def payment_event_handlers(clock: Clock) -> tuple[dict[type[Message], Handler], BatchHandler]:
    """How the ledger consumes payments.events: every entry rule's event type, posted
    set-wise per batch (`post_events`)."""

    async def post_batch(connection: asyncpg.Connection, events: Sequence[Event]) -> None:
        await post_events(connection, events, clock=clock)

    async def post_one(connection: asyncpg.Connection, event: Event) -> None:
        await post_events(connection, [event], clock=clock)

    return dict.fromkeys(ENTRY_RULES, post_one), post_batch


async def wire_ledger(context: ServiceContext) -> None:
    """Subscribe the ledger's consumers; each applies an event exactly once."""

    handlers, post_batch = payment_event_handlers(context.clock)
    context.consume(Topic.PAYMENTS_EVENTS, handlers, batch_handler=post_batch)
    context.consume(
        Topic.MERCHANTS_EVENTS,
        {MerchantOnboarded: record_merchant_terms, MerchantUpdated: record_merchant_terms},
    )

    async def close_payout(
        connection: asyncpg.Connection, result: BankPayoutPaid | BankPayoutFailed
    ) -> None:
        await record_payout_result(connection, result, clock=context.clock)

    context.consume(
        Topic.CHANNEL_RESULTS, {BankPayoutPaid: close_payout, BankPayoutFailed: close_payout}
    )


def _add_internal_routes(app: FastAPI) -> None:
    @app.get("/internal/v1/balances", response_model=list[AccountBalanceView])
    async def list_balances(
        request: Request,
        account_prefix: Annotated[str, Query(min_length=1, max_length=200)],
        limit: Annotated[int, Query(ge=1, le=BALANCES_LIMIT_MAX)] = 1000,
    ) -> list[AccountBalanceView]:
        """Balances of the accounts whose id starts with `account_prefix` (read-only).

        Raw sums of postings: a merchant's pending balance is the negation of its row.
        """
        context: ServiceContext = request.app.state.context
        balances = await read_balances(context.pool, account_prefix, limit=limit)
        return [
            AccountBalanceView(
                account_id=balance.account_id,
                currency=balance.currency,
                balance_minor=balance.balance_minor,
            )
            for balance in balances
        ]


class SettlementRunRequest(BaseModel):
    as_of: date = Field(description="The settlement day: entries due by it are settled.")


def _add_settlement_routes(app: FastAPI) -> None:
    @app.post("/internal/v1/settlements/run", response_model=list[SettlementBatchSummary])
    async def run(request: Request, body: SettlementRunRequest) -> list[SettlementBatchSummary]:
        """Settle every merchant for `as_of`; idempotent: a day settled once creates nothing
        more. Returns the batches created by this run."""
        context: ServiceContext = request.app.state.context
        return await run_settlements(context.pool, body.as_of, context.clock)

    @app.get("/internal/v1/settlements/{batch_id}/statement.csv")
    async def statement(request: Request, batch_id: str) -> Response:
        """The CSV settlement statement of one batch."""
        context: ServiceContext = request.app.state.context
        found = await load_batch_lines(context.pool, batch_id)
        if found is None:
            return Response("unknown settlement batch\n", status_code=404)
        batch, lines = found
        text = statement_csv(batch_id, batch["settlement_date"], batch["currency"].strip(), lines)
        return Response(text, media_type="text/csv")


class PayoutRunRequest(BaseModel):
    as_of: date = Field(description="The payout day: one payout per merchant and currency.")


def _add_payout_routes(app: FastAPI) -> None:
    @app.post("/internal/v1/payouts/run", response_model=list[PayoutSummary])
    async def run(request: Request, body: PayoutRunRequest) -> list[PayoutSummary]:
        """Pay out every merchant's available balance that reaches its minimum; idempotent
        per day. Returns the payouts created by this run."""
        context: ServiceContext = request.app.state.context
        return await run_payouts(context.pool, body.as_of, context.clock)


class AdjustmentRequest(BaseModel):
    merchant_id: str = Field(min_length=1, max_length=128)
    reference: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    amount_minor: SignedAmountMinor
    reason: str = Field(min_length=1, max_length=500)


class ReversalRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


def _adjustment_answer(adjustment: Adjustment, posted_now: bool) -> JSONResponse:
    body = {**asdict(adjustment), "created_at": adjustment.created_at.isoformat()}
    return JSONResponse(body, status_code=201 if posted_now else 200)


def _add_adjustment_routes(app: FastAPI) -> None:
    @app.post("/internal/v1/adjustments")
    async def adjust(request: Request, body: AdjustmentRequest) -> JSONResponse:
        """Post a manual adjustment of a merchant's available balance (201), or return the
        one already posted under the same reference (200)."""
        context: ServiceContext = request.app.state.context
        if body.amount_minor == 0:
            return _refusal(AdjustmentRefused(422, "invalid_amount", "an adjustment of 0"))
        try:
            adjustment, posted_now = await post_adjustment(
                context.pool,
                merchant_id=body.merchant_id,
                reference=body.reference,
                currency=body.currency,
                amount_minor=body.amount_minor,
                reason=body.reason,
                clock=context.clock,
            )
        except AdjustmentRefused as refusal:
            return _refusal(refusal)
        return _adjustment_answer(adjustment, posted_now)

    @app.post("/internal/v1/adjustments/{adjustment_id}/reverse")
    async def reverse(request: Request, adjustment_id: str, body: ReversalRequest) -> JSONResponse:
        """Post the reversal of an adjustment once (201; 200 when it was reversed before)."""
        context: ServiceContext = request.app.state.context
        try:
            adjustment, posted_now = await reverse_adjustment(
                context.pool, adjustment_id, reason=body.reason, clock=context.clock
            )
        except AdjustmentRefused as refusal:
            return _refusal(refusal)
        return _adjustment_answer(adjustment, posted_now)


def _refusal(refusal: AdjustmentRefused) -> JSONResponse:
    return JSONResponse({"code": refusal.code, "detail": str(refusal)}, status_code=refusal.status)


def create_app(settings: LedgerSettings | None = None, clock: Clock | None = None) -> FastAPI:
    """The ledger's ASGI app; run its lifespan to start consuming and publishing."""
    ledger_settings = settings or LedgerSettings()
    app = create_service_app(
        SERVICE_NAME,
        ledger_settings,
        migration_packages=["services.ledger.migrations"],
        wiring=wire_ledger,
        clock=clock,
        app=FastAPI(title="payrail ledger"),
    )
    _add_internal_routes(app)
    _add_settlement_routes(app)
    app.include_router(balance_transactions_router)
    _add_payout_routes(app)
    _add_adjustment_routes(app)
    return app
