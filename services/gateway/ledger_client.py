"""Calls from the gateway to the ledger's internal API (runs the ledger carries out)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request

from services.gateway.problems import ApiProblem


async def post_to_ledger(request: Request, path: str, body: dict[str, Any]) -> Any:
    """POST `body` to the ledger and return its JSON answer.

    Raises the 503 `ledger_unavailable` problem when the ledger cannot be reached or fails.
    """
    client: httpx.AsyncClient = request.app.state.ledger_client
    try:
        answer = await client.post(path, json=body)
        answer.raise_for_status()
    except httpx.HTTPError as error:
        raise ApiProblem(503, "ledger_unavailable", "Ledger unavailable", repr(error)) from error
    return answer.json()
