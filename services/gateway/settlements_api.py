"""Settlements: admins run them (the ledger, which owns the journal, carries them out);
merchants read their batches, line by line, and download each batch's CSV statement."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from schemas.ledger import SettlementBatchSummary, SettlementLine
from schemas.statements import statement_csv
from services.gateway.auth import AdminDependency, MerchantDependency
from services.gateway.ledger_client import post_to_ledger
from services.gateway.listing import (
    LIMIT_DEFAULT,
    Limit,
    Page,
    StartingAfter,
    fetch_merchant_page,
)
from services.gateway.models import Body
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

router = APIRouter(responses=PROBLEM_RESPONSES)
admin = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[AdminDependency], responses=PROBLEM_RESPONSES
)


class SettlementRunRequest(Body):
    as_of: date = Field(description="The settlement day: funds due by it are settled.")


class SettlementRunView(BaseModel):
    as_of: date
    created: list[SettlementBatchSummary] = Field(
        description="Batches this run created; a day run again creates none."
    )


@admin.post("/settlements/run", response_model=SettlementRunView)
async def run_settlements(body: SettlementRunRequest, request: Request) -> Any:
    """Settle every merchant for `as_of` under its T+N terms and cutoff. Idempotent."""
    created = await post_to_ledger(
        request, "/internal/v1/settlements/run", {"as_of": body.as_of.isoformat()}
    )
    return SettlementRunView(as_of=body.as_of, created=created)


class SettlementView(BaseModel):
    id: str
    object: str = "settlement"
    currency: str
    settlement_date: date
    net: int = Field(description="Minor units moved from pending to available (may be < 0).")
    lines: list[SettlementLine]
    created_at: datetime


class SettlementPage(Page):
    data: list[SettlementView]


def _settlement_view(row: asyncpg.Record) -> SettlementView:
    return SettlementView(
        id=row["batch_id"],
        currency=row["currency"],
        settlement_date=row["settlement_date"],
        net=row["net_minor"],
        lines=row["lines"],
        created_at=row["created_at"],
    )


async def _load_settlement(request: Request, merchant_id: str, batch_id: str) -> SettlementView:
    row = await request.app.state.context.pool.fetchrow(
        "SELECT * FROM settlements WHERE batch_id = $1 AND merchant_id = $2",
        batch_id,
        merchant_id,
    )
    if row is None:
        raise ApiProblem(
            404, "settlement_not_found", "Settlement not found", f"No settlement {batch_id}."
        )
    return _settlement_view(row)


@router.get("/v1/settlements", response_model=SettlementPage, tags=["settlements"])
async def list_settlements(
    request: Request,
    merchant: MerchantDependency,
    limit: Limit = LIMIT_DEFAULT,
    starting_after: StartingAfter = None,
) -> Any:
    """The merchant's settlement batches, newest first, with cursor pagination."""
    pool: asyncpg.Pool = request.app.state.context.pool
    async with pool.acquire() as connection:
        page, has_more, cursor = await fetch_merchant_page(
            connection,
            "settlements",
            "batch_id",
            merchant.merchant_id,
            starting_after=starting_after,
            limit=limit,
        )
    return SettlementPage(
        data=[_settlement_view(row) for row in page], has_more=has_more, next_cursor=cursor
    )


@router.get("/v1/settlements/{batch_id}", response_model=SettlementView, tags=["settlements"])
async def get_settlement(batch_id: str, request: Request, merchant: MerchantDependency) -> Any:
    """One settlement batch with its lines. Another merchant's batch is not found."""
    return await _load_settlement(request, merchant.merchant_id, batch_id)


@router.get(
    "/v1/settlements/{batch_id}/statement.csv",
    tags=["settlements"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The CSV statement"}},
)
async def settlement_statement(
    batch_id: str, request: Request, merchant: MerchantDependency
) -> Response:
    """The batch's statement: one row per settled entry, then the net, in minor units."""
    view = await _load_settlement(request, merchant.merchant_id, batch_id)
    text = statement_csv(view.id, view.settlement_date, view.currency, view.lines)
    return Response(text, media_type="text/csv")
