"""Calls from the gateway to the ledger's internal API (runs the ledger carries out)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request

from services.gateway.problems import ApiProblem


async def call_ledger(request: Request, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST `body` to the ledger; returns its status and JSON answer.

    A refusal the ledger explains (a 4xx with a `code`) becomes the same problem; anything
    else that fails is the 503 `ledger_unavailable` problem.
    """
    client: httpx.AsyncClient = request.app.state.ledger_client
    try:
        answer = await client.post(path, json=body)
    except httpx.HTTPError as error:
        raise ApiProblem(503, "ledger_unavailable", "Ledger unavailable", repr(error)) from error
    if 400 <= answer.status_code < 500:
        try:
            explained = answer.json()
        except ValueError:
            explained = None
        if isinstance(explained, dict) and isinstance(explained.get("code"), str):
            raise ApiProblem(
                answer.status_code,
                explained["code"],
                "Refused by the ledger",
                str(explained.get("detail", "")),
            )
    if answer.status_code >= 300:
        detail = f"ledger answered HTTP {answer.status_code}"
        raise ApiProblem(503, "ledger_unavailable", "Ledger unavailable", detail)
    return answer.status_code, answer.json()


async def post_to_ledger(request: Request, path: str, body: dict[str, Any]) -> Any:
    """POST `body` to the ledger and return its JSON answer (see `call_ledger`)."""
    _status, answer = await call_ledger(request, path, body)
    return answer
