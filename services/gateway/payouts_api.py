"""Payouts: admins run them (the ledger decides what is paid), merchants read them, and
the bank rail tells us how each ended."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from schemas.common import Failure
from schemas.payouts import PayoutStatus, PayoutSummary
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

log = structlog.get_logger(__name__)

router = APIRouter(responses=PROBLEM_RESPONSES)
admin = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[AdminDependency], responses=PROBLEM_RESPONSES
)


class PayoutRunRequest(Body):
    as_of: date = Field(description="The payout day: at most one payout per merchant, currency.")


class PayoutRunView(BaseModel):
    as_of: date
    created: list[PayoutSummary] = Field(
        description="Payouts this run created; a day run again creates none."
    )


@admin.post("/payouts/run", response_model=PayoutRunView)
async def run_payouts(body: PayoutRunRequest, request: Request) -> Any:
    """Pay out every merchant's available balance that reaches its minimum payout, through
    the bank rail. Idempotent per day."""
    created = await post_to_ledger(
        request, "/internal/v1/payouts/run", {"as_of": body.as_of.isoformat()}
    )
    return PayoutRunView(as_of=body.as_of, created=created)


class PayoutView(BaseModel):
    id: str
    object: str = "payout"
    amount: int = Field(description="Minor units sent to the merchant's bank account.")
    currency: str
    payout_date: date
    status: PayoutStatus
    bank_reference: str | None
    failure: Failure | None
    created_at: datetime
    updated_at: datetime


class PayoutPage(Page):
    data: list[PayoutView]


def _payout_view(row: asyncpg.Record) -> PayoutView:
    return PayoutView(
        id=row["payout_id"],
        amount=row["amount_minor"],
        currency=row["currency"],
        payout_date=row["payout_date"],
        status=row["status"],
        bank_reference=row["bank_reference"],
        failure=row["failure"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@router.get("/v1/payouts", response_model=PayoutPage, tags=["payouts"])
async def list_payouts(
    request: Request,
    merchant: MerchantDependency,
    limit: Limit = LIMIT_DEFAULT,
    starting_after: StartingAfter = None,
) -> Any:
    """The merchant's payouts, newest first, with cursor pagination."""
    pool: asyncpg.Pool = request.app.state.context.pool
    async with pool.acquire() as connection:
        page, has_more, cursor = await fetch_merchant_page(
            connection,
            "payouts",
            "payout_id",
            merchant.merchant_id,
            starting_after=starting_after,
            limit=limit,
        )
    return PayoutPage(
        data=[_payout_view(row) for row in page], has_more=has_more, next_cursor=cursor
    )


@router.get("/v1/payouts/{payout_id}", response_model=PayoutView, tags=["payouts"])
async def get_payout(payout_id: str, request: Request, merchant: MerchantDependency) -> Any:
    """One payout. Another merchant's payout is not found."""
    row = await request.app.state.context.pool.fetchrow(
        "SELECT * FROM payouts WHERE payout_id = $1 AND merchant_id = $2",
        payout_id,
        merchant.merchant_id,
    )
    if row is None:
        raise ApiProblem(404, "payout_not_found", "Payout not found", f"No payout {payout_id}.")
    return _payout_view(row)
