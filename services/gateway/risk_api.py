"""Risk control for operations (admin key): each merchant's rules, the platform's block
list, and the queue of payments held for review. The risk service owns all three and
records every change as an event; these routes ask it."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field

from schemas.risk import PayerKey, RiskRules
from services.gateway.auth import AdminDependency
from services.gateway.ledger_client import call_internal
from services.gateway.models import Body
from services.gateway.problems import PROBLEM_RESPONSES

admin = APIRouter(
    prefix="/v1/admin",
    tags=["risk"],
    dependencies=[AdminDependency],
    responses=PROBLEM_RESPONSES,
)

MerchantId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PaymentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


async def _ask_risk(
    request: Request,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return await call_internal(request.app.state.risk_client, "risk", method, path, body, params)


@admin.get("/merchants/{merchant_id}/risk_rules", response_model=RiskRules)
async def get_risk_rules(merchant_id: MerchantId, request: Request) -> Any:
    """The merchant's risk rules (the platform defaults until it has its own)."""
    return (
        await _ask_risk(request, "GET", f"/internal/v1/merchants/{merchant_id}/risk_rules")
    ).json()


@admin.put("/merchants/{merchant_id}/risk_rules", response_model=RiskRules)
async def put_risk_rules(merchant_id: MerchantId, rules: RiskRules, request: Request) -> Any:
    """Replace the merchant's risk rules; recorded as an event, applied to its next
    payment. A null limit switches that rule off."""
    path = f"/internal/v1/merchants/{merchant_id}/risk_rules"
    return (await _ask_risk(request, "PUT", path, rules.model_dump(mode="json"))).json()


class BlockRequest(Body):
    type: PayerKey = Field(description="payer, ip, device or card_fingerprint")
    value: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=500)


@admin.post("/risk/blocklist", status_code=201)
async def block(body: BlockRequest, request: Request, response: Response) -> Any:
    """Block a payer, IP, device or card fingerprint on every merchant (201; 200 when it
    was blocked already)."""
    answer = await _ask_risk(
        request,
        "POST",
        "/internal/v1/blocklist",
        {"key": body.type.value, "value": body.value, "reason": body.reason},
    )
    response.status_code = answer.status_code
    return {"type": body.type.value, "value": body.value, "reason": body.reason}


@admin.delete("/risk/blocklist", status_code=204)
async def unblock(
    request: Request,
    type: Annotated[PayerKey, Query(description="payer, ip, device or card_fingerprint")],
    value: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    """Remove an entry from the block list (404 `blocklist_entry_not_found`)."""
    # As query parameters, not path segments: any value reaches risk exactly as given.
    params = {"key": type.value, "value": value}
    await _ask_risk(request, "DELETE", "/internal/v1/blocklist", params=params)
    return Response(status_code=204)


@admin.get("/risk/reviews")
async def list_reviews(
    request: Request,
    status: Annotated[str, Query(pattern="^(pending|approved|denied|closed)$")] = "pending",
) -> Any:
    """Payments held for review, oldest first (by default those still waiting)."""
    answer = await _ask_risk(request, "GET", f"/internal/v1/reviews?status={status}")
    return {"object": "list", "data": answer.json()}


class ReviewRequest(Body):
    reviewer: str = Field(default="operations", min_length=1, max_length=128)


@admin.post("/risk/reviews/{payment_id}/approve")
async def approve(
    payment_id: PaymentId, request: Request, body: ReviewRequest | None = None
) -> Any:
    """Approve a held payment: it goes on to its channel (409 `review_closed` when it was
    decided or expired, 404 `review_not_found`)."""
    path = f"/internal/v1/reviews/{payment_id}/approve"
    return (await _ask_risk(request, "POST", path, (body or ReviewRequest()).model_dump())).json()


@admin.post("/risk/reviews/{payment_id}/deny")
async def deny(payment_id: PaymentId, request: Request, body: ReviewRequest | None = None) -> Any:
    """Deny a held payment: it fails with the rules that held it and `review.manual`."""
    path = f"/internal/v1/reviews/{payment_id}/deny"
    return (await _ask_risk(request, "POST", path, (body or ReviewRequest()).model_dump())).json()
