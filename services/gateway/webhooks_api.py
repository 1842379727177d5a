"""Merchant API for webhook endpoints. The notifier owns endpoints and their signing
secrets; the gateway authenticates the merchant and forwards, so secrets never travel
on the event bus."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from services.gateway.auth import MerchantDependency
from services.gateway.models import (
    CreateWebhookEndpointRequest,
    ReplayEventsRequest,
    ResendEventRequest,
    RotateSecretRequest,
    UpdateWebhookEndpointRequest,
)
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

router = APIRouter(tags=["webhooks"], responses=PROBLEM_RESPONSES)


async def _forward(request: Request, method: str, path: str, **kwargs: Any) -> Response:
    client: httpx.AsyncClient = request.app.state.notifier_client
    try:
        answer = await client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise ApiProblem(
            503, "notifier_unavailable", "Webhook service unavailable", repr(error)
        ) from error
    if answer.status_code == 204:
        return Response(status_code=204)
    return JSONResponse(
        answer.json(),
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )


@router.post("/v1/webhook_endpoints", status_code=201)
async def create_webhook_endpoint(
    body: CreateWebhookEndpointRequest, request: Request, merchant: MerchantDependency
) -> Response:
    """Register a webhook endpoint. The response carries its signing secret, once."""
    return await _forward(
        request,
        "POST",
        "/internal/v1/webhook_endpoints",
        json={"merchant_id": merchant.merchant_id, "url": body.url, "events": body.events},
    )


@router.get("/v1/webhook_endpoints")
async def list_webhook_endpoints(request: Request, merchant: MerchantDependency) -> Response:
    return await _forward(
        request,
        "GET",
        "/internal/v1/webhook_endpoints",
        params={"merchant_id": merchant.merchant_id},
    )


EndpointId = Annotated[str, Path(pattern=r"^we_[A-Za-z0-9_]{1,64}$")]


@router.patch("/v1/webhook_endpoints/{endpoint_id}")
async def update_webhook_endpoint(
    endpoint_id: EndpointId,
    body: UpdateWebhookEndpointRequest,
    request: Request,
    merchant: MerchantDependency,
) -> Response:
    """Change an endpoint's `url`, `events` or `enabled` flag (what is left out stays)."""
    return await _forward(
        request,
        "PATCH",
        f"/internal/v1/webhook_endpoints/{endpoint_id}",
        json={"merchant_id": merchant.merchant_id, **body.model_dump(exclude_none=True)},
    )


@router.delete("/v1/webhook_endpoints/{endpoint_id}", status_code=204)
async def delete_webhook_endpoint(
    endpoint_id: EndpointId, request: Request, merchant: MerchantDependency
) -> Response:
    """Stop sending to an endpoint; its delivery history is kept."""
    return await _forward(
        request,
        "DELETE",
        f"/internal/v1/webhook_endpoints/{endpoint_id}",
        params={"merchant_id": merchant.merchant_id},
    )


@router.post("/v1/webhook_endpoints/{endpoint_id}/rotate_secret")
async def rotate_webhook_secret(
    endpoint_id: EndpointId,
    request: Request,
    merchant: MerchantDependency,
    body: RotateSecretRequest | None = None,
) -> Response:
    """A new signing secret, shown once. The old one keeps signing next to it (a second
    `v1=` in `Payrail-Signature`) for `overlap_seconds` (default one day)."""
    overlap = (body or RotateSecretRequest()).overlap_seconds
    return await _forward(
        request,
        "POST",
        f"/internal/v1/webhook_endpoints/{endpoint_id}/rotate_secret",
        json={"merchant_id": merchant.merchant_id, "overlap_seconds": overlap},
    )


DeliveryId = Annotated[
    str | None,
    Query(pattern=r"^wd_[A-Za-z0-9_]{1,64}$", description="Continue after this delivery."),
]
DeliveryLimit = Annotated[int, Query(ge=1, le=100, description="Deliveries per page.")]


@router.get("/v1/webhook_endpoints/{endpoint_id}/deliveries")
async def list_endpoint_deliveries(
    endpoint_id: EndpointId,
    request: Request,
    merchant: MerchantDependency,
    limit: DeliveryLimit = 20,
    starting_after: DeliveryId = None,
) -> Response:
    """The endpoint's deliveries, newest first, each with every attempt (time, status code,
    latency, error, response excerpt). A deleted endpoint's history is still listed."""
    params: dict[str, str | int] = {
        "merchant_id": merchant.merchant_id,
        "endpoint_id": endpoint_id,
        "limit": limit,
    }
    if starting_after is not None:
        params["starting_after"] = starting_after
    return await _forward(request, "GET", "/internal/v1/deliveries", params=params)


@router.get("/v1/events/{event_id}/deliveries")
async def list_event_deliveries(
    event_id: uuid.UUID,
    request: Request,
    merchant: MerchantDependency,
    limit: DeliveryLimit = 20,
    starting_after: DeliveryId = None,
) -> Response:
    """Every delivery of one event (first deliveries, resends, replays) with its attempts."""
    params: dict[str, str | int] = {
        "merchant_id": merchant.merchant_id,
        "event_id": str(event_id),
        "limit": limit,
    }
    if starting_after is not None:
        params["starting_after"] = starting_after
    return await _forward(request, "GET", "/internal/v1/deliveries", params=params)


@router.post("/v1/events/{event_id}/resend", status_code=202)
async def resend_event(
    event_id: uuid.UUID,
    request: Request,
    merchant: MerchantDependency,
    body: ResendEventRequest | None = None,
) -> Response:
    """Send one event again, now, as a new delivery with its own attempts: to
    `endpoint_id`, or to every enabled endpoint subscribed to its type."""
    endpoint_id = (body or ResendEventRequest()).endpoint_id
    return await _forward(
        request,
        "POST",
        f"/internal/v1/events/{event_id}/resend",
        json={"merchant_id": merchant.merchant_id, "endpoint_id": endpoint_id},
    )


@router.post("/v1/webhook_endpoints/{endpoint_id}/replay", status_code=202)
async def replay_events(
    endpoint_id: EndpointId,
    body: ReplayEventsRequest,
    request: Request,
    merchant: MerchantDependency,
) -> Response:
    """Send the endpoint every event it subscribes to that occurred in [`from`, `to`),
    oldest first, as new deliveries (at most 10,000 events and 31 days per replay)."""
    return await _forward(
        request,
        "POST",
        f"/internal/v1/webhook_endpoints/{endpoint_id}/replay",
        json={
            "merchant_id": merchant.merchant_id,
            "from": body.start.isoformat(),
            "to": body.end.isoformat(),
        },
    )
