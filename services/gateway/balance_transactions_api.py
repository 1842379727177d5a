"""Balance transactions: every movement of a merchant's balance, one per posting on one of
its accounts, with the journal entry and the event behind it.

The ledger owns the journal, so the list is read from it (not from a projection): each
page comes straight from the journal entries, in the order the ledger recorded them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from services.gateway.auth import MerchantDependency
from services.gateway.listing import LIMIT_DEFAULT, Limit, Page, StartingAfter, unknown_cursor
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

router = APIRouter(tags=["balance"], responses=PROBLEM_RESPONSES)

_LEDGER_PATH = "/internal/v1/balance_transactions"
_LEDGER_UNKNOWN_CURSOR = "unknown_cursor"


class LedgerBalanceTransaction(BaseModel):
    """One item of the ledger's internal answer (its fields that the API shows)."""

    id: str
    entry_id: str
    kind: str
    source_event_id: str
    bucket: str
    currency: str
    amount_minor: int
    occurred_at: datetime


class LedgerBalanceTransactionPage(BaseModel):
    data: list[LedgerBalanceTransaction]
    has_more: bool


class BalanceTransactionView(BaseModel):
    id: str = Field(description="Stable id; pass it as `starting_after` to page on.")
    object: str = "balance_transaction"
    entry_id: str = Field(description="The ledger's journal entry this posting belongs to.")
    kind: str = Field(
        description="What moved the balance: payment_succeeded, refund_succeeded, settlement,"
        " payout, ..."
    )
    source_event_id: str = Field(description="The id of the event the entry records.")
    bucket: str = Field(description="The balance it moved: pending, available, ...")
    currency: str
    amount: int = Field(
        description="Minor units added to the bucket: positive credits the merchant, negative"
        " debits it."
    )
    occurred_at: datetime


class BalanceTransactionPage(Page):
    data: list[BalanceTransactionView]


def _ledger_unavailable(detail: str) -> ApiProblem:
    return ApiProblem(503, "ledger_unavailable", "Ledger unavailable", detail)


def _is_unknown_cursor(answer: httpx.Response) -> bool:
    if answer.status_code != 422:
        return False
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") == _LEDGER_UNKNOWN_CURSOR


async def _ledger_page(
    client: httpx.AsyncClient, merchant_id: str, limit: int, starting_after: str | None
) -> LedgerBalanceTransactionPage:
    """One page from the ledger. Raises the unknown cursor problem (422) when the ledger
    does not know `starting_after` for this merchant, and `ledger_unavailable` (503) when
    it cannot be reached or answers anything else."""
    params: dict[str, str | int] = {"merchant_id": merchant_id, "limit": limit}
    if starting_after is not None:
        params["starting_after"] = starting_after
    try:
        answer = await client.get(_LEDGER_PATH, params=params)
    except httpx.HTTPError as error:
        raise _ledger_unavailable(repr(error)) from error
    if starting_after is not None and _is_unknown_cursor(answer):
        raise unknown_cursor(starting_after)
    try:
        answer.raise_for_status()
        return LedgerBalanceTransactionPage.model_validate_json(answer.content)
    except (httpx.HTTPError, ValidationError) as error:
        raise _ledger_unavailable(repr(error)) from error


@router.get("/v1/balance_transactions", response_model=BalanceTransactionPage)
async def list_balance_transactions(
    request: Request,
    merchant: MerchantDependency,
    limit: Limit = LIMIT_DEFAULT,
    starting_after: StartingAfter = None,
) -> Any:
    """Every movement of the merchant's balances, newest first, with cursor pagination:
    one per posting on a merchant account (a settlement shows twice: out of pending, into
    available)."""
    client: httpx.AsyncClient = request.app.state.ledger_client
    ledger_page = await _ledger_page(client, merchant.merchant_id, limit, starting_after)
    data = [
        BalanceTransactionView(
            id=item.id,
            entry_id=item.entry_id,
            kind=item.kind,
            source_event_id=item.source_event_id,
            bucket=item.bucket,
            currency=item.currency,
            amount=item.amount_minor,
            occurred_at=item.occurred_at,
        )
        for item in ledger_page.data
    ]
    next_cursor = data[-1].id if ledger_page.has_more and data else None
    return BalanceTransactionPage(data=data, has_more=ledger_page.has_more, next_cursor=next_cursor)
