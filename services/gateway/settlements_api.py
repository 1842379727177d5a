"""Admin API: settlement runs, carried out by the ledger (which owns the journal)."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from schemas.ledger import SettlementBatchSummary
from services.gateway.auth import AdminDependency
from services.gateway.models import Body
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[AdminDependency], responses=PROBLEM_RESPONSES
)


class SettlementRunRequest(Body):
    as_of: date = Field(description="The settlement day: funds due by it are settled.")


class SettlementRunView(BaseModel):
    as_of: date
    created: list[SettlementBatchSummary] = Field(
        description="Batches this run created; a day run again creates none."
    )


@router.post("/settlements/run", response_model=SettlementRunView)
async def run_settlements(body: SettlementRunRequest, request: Request) -> Any:
    """Settle every merchant for `as_of` under its T+N terms and cutoff. Idempotent."""
    client: httpx.AsyncClient = request.app.state.ledger_client
    try:
        answer = await client.post(
            "/internal/v1/settlements/run", json={"as_of": body.as_of.isoformat()}
        )
        answer.raise_for_status()
    except httpx.HTTPError as error:
        raise ApiProblem(503, "ledger_unavailable", "Ledger unavailable", repr(error)) from error
    return SettlementRunView(as_of=body.as_of, created=answer.json())
