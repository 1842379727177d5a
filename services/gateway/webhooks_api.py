"""Merchant API for webhook endpoints. The notifier owns endpoints and their signing
secrets; the gateway authenticates the merchant and forwards, so secrets never travel
on the event bus."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.auth import MerchantDependency
from services.gateway.models import CreateWebhookEndpointRequest
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

router = APIRouter(tags=["webhooks"], responses=PROBLEM_RESPONSES)


async def _forward(request: Request, method: str, path: str, **kwargs: Any) -> JSONResponse:
    client: httpx.AsyncClient = request.app.state.notifier_client
    try:
        answer = await client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise ApiProblem(
            503, "notifier_unavailable", "Webhook service unavailable", repr(error)
        ) from error
    return JSONResponse(
        answer.json(),
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )


@router.post("/v1/webhook_endpoints", status_code=201)
async def create_webhook_endpoint(
    body: CreateWebhookEndpointRequest, request: Request, merchant: MerchantDependency
) -> JSONResponse:
    """Register a webhook endpoint. The response carries its signing secret, once."""
    return await _forward(
        request,
        "POST",
        "/internal/v1/webhook_endpoints",
        json={"merchant_id": merchant.merchant_id, "url": body.url, "events": body.events},
    )


@router.get("/v1/webhook_endpoints")
async def list_webhook_endpoints(request: Request, merchant: MerchantDependency) -> JSONResponse:
    return await _forward(
        request,
        "GET",
        "/internal/v1/webhook_endpoints",
        params={"merchant_id": merchant.merchant_id},
    )
