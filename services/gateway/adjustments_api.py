"""Manual adjustments of a merchant's available balance, by operations (admin key): the
ledger posts them as balanced journal entries, and reverses one with the opposite entry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from schemas.money import CurrencyCode, SignedAmountMinor
from services.gateway.auth import AdminDependency
from services.gateway.ledger_client import call_ledger
from services.gateway.models import Body
from services.gateway.problems import PROBLEM_RESPONSES

admin = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[AdminDependency], responses=PROBLEM_RESPONSES
)

Reason = Annotated[str, Field(min_length=1, max_length=500, description="Why, for the record.")]


class AdjustmentRequest(Body):
    merchant_id: str = Field(min_length=1, max_length=128)
    reference: str = Field(
        min_length=1,
        max_length=128,
        description="Your reference: the same request again returns the adjustment posted.",
    )
    currency: CurrencyCode
    amount: SignedAmountMinor = Field(
        description="Minor units added to the merchant's available balance; negative takes "
        "money away. Not 0."
    )
    reason: Reason


class ReversalRequest(Body):
    reason: Reason


class AdjustmentView(BaseModel):
    id: str
    object: str = "adjustment"
    merchant_id: str
    reference: str
    currency: str
    amount: int
    reason: str
    reverses: str | None = Field(description="The adjustment this one reverses, if any.")
    created_at: datetime


def _view(answer: dict[str, Any]) -> AdjustmentView:
    return AdjustmentView(
        id=answer["adjustment_id"],
        merchant_id=answer["merchant_id"],
        reference=answer["reference"],
        currency=answer["currency"],
        amount=answer["amount_minor"],
        reason=answer["reason"],
        reverses=answer["reverses"],
        created_at=answer["created_at"],
    )


@admin.post("/adjustments", status_code=201, response_model=AdjustmentView)
async def adjust(body: AdjustmentRequest, request: Request, response: Response) -> Any:
    """Correct a merchant's available balance (201), or get back the adjustment already
    posted under this reference (200). Codes: `merchant_not_found` (404),
    `adjustment_reference_reused` (409), `invalid_amount` (422)."""
    status, answer = await call_ledger(
        request,
        "/internal/v1/adjustments",
        {
            "merchant_id": body.merchant_id,
            "reference": body.reference,
            "currency": body.currency,
            "amount_minor": body.amount,
            "reason": body.reason,
        },
    )
    response.status_code = status
    return _view(answer)


@admin.post("/adjustments/{adjustment_id}/reverse", status_code=201, response_model=AdjustmentView)
async def reverse(
    adjustment_id: Annotated[str, Path(pattern=r"^adj_[0-9a-f]{32}$")],
    body: ReversalRequest,
    request: Request,
    response: Response,
) -> Any:
    """Reverse an adjustment with the opposite one, once (201; 200 with the reversal when
    it was reversed before). Codes: `adjustment_not_found` (404), `adjustment_is_reversal`
    (409)."""
    status, answer = await call_ledger(
        request, f"/internal/v1/adjustments/{adjustment_id}/reverse", {"reason": body.reason}
    )
    response.status_code = status
    return _view(answer)
