"""Calls from the gateway to the internal APIs of the ledger and the risk service."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request

from services.gateway.problems import ApiProblem


async def call_internal(
    client: httpx.AsyncClient,
    service: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """Call `service`'s internal API and return its (2xx) answer.

    A refusal the service explains (a 4xx with a `code`) becomes the same problem;
    anything else that fails is the 503 `{service}_unavailable` problem.
    """
    unavailable = f"{service}_unavailable"
    title = f"{service.capitalize()} unavailable"
    try:
        answer = await client.request(method, path, json=body, params=params)
    except httpx.HTTPError as error:
        raise ApiProblem(503, unavailable, title, repr(error)) from error
    if 400 <= answer.status_code < 500:
        try:
            explained = answer.json()
        except ValueError:
            explained = None
        if isinstance(explained, dict) and isinstance(explained.get("code"), str):
            raise ApiProblem(
                answer.status_code,
                explained["code"],
                f"Refused by {service}",
                str(explained.get("detail", "")),
            )
    if answer.status_code >= 300:
        raise ApiProblem(503, unavailable, title, f"{service} answered HTTP {answer.status_code}")
    return answer


async def call_ledger(request: Request, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST `body` to the ledger; returns its status and JSON answer (see call_internal)."""
    answer = await call_internal(request.app.state.ledger_client, "ledger", "POST", path, body)
    return answer.status_code, answer.json()


async def post_to_ledger(request: Request, path: str, body: dict[str, Any]) -> Any:
    """POST `body` to the ledger and return its JSON answer (see `call_internal`)."""
    _status, answer = await call_ledger(request, path, body)
    return answer
