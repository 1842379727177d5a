"""Admin API: onboarding and managing merchants and their API keys. Needs the admin key.

Every change of a merchant is recorded as an event carrying the whole new profile
(`MerchantOnboarded`, `MerchantUpdated`) in the same transaction as the gateway's own
row, so other services learn it from `merchants.events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import structlog
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from schemas.common import Channel, FeePlan
from schemas.merchants import MerchantOnboarded, MerchantProfile, MerchantUpdated
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision, stream_version
from services.common.ids import new_prefixed_id, new_secret
from services.common.invariant import InvariantViolation
from services.gateway.auth import AdminDependency
from services.gateway.domain import display_prefix, hash_api_key
from services.gateway.models import (
    ApiKeyList,
    ApiKeyView,
    IssuedApiKeyView,
    MerchantView,
    OnboardedMerchantView,
    OnboardMerchantRequest,
    RotateApiKeyRequest,
    UpdateMerchantRequest,
)
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

log = structlog.get_logger(__name__)
router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[AdminDependency], responses=PROBLEM_RESPONSES
)


def _merchant_view(merchant_id: str, profile: MerchantProfile, version: int) -> MerchantView:
    return MerchantView(id=merchant_id, version=version, **profile.model_dump())


def _profile_or_problem(fields: dict[str, Any]) -> MerchantProfile:
    try:
        return MerchantProfile.model_validate(fields)
    except ValidationError as error:
        raise ApiProblem(
            422,
            "invalid_merchant_profile",
            "Invalid merchant profile",
            str(error.errors()[0]["msg"]),
        ) from error


def _check_fee_plans(fee_plans: Mapping[Channel, FeePlan]) -> None:
    """Refuse a fixed fee that names no currency: 30 minor units are 0.30 CNY but 30 KRW.

    Raises ApiProblem 422 `fee_currency_missing`. Merchants onboarded before keep their
    plans, and their payments are refused in any currency the plan does not price
    (`currency_not_priced`).
    """
    vague = sorted(
        channel.value for channel, plan in fee_plans.items() if not plan.names_its_currencies
    )
    if vague:
        raise ApiProblem(
            422,
            "fee_currency_missing",
            "Fixed fee without a currency",
            f"fee plans of {', '.join(vague)}: set the fixed fee per currency in "
            "fixed_minor_by_currency (minor units of each currency), not fixed_minor",
        )


async def _issue_api_key(
    connection: Connection, merchant_id: str, key_prefix: str
) -> IssuedApiKeyView:
    secret = new_secret(key_prefix)
    row = await connection.fetchrow(
        "INSERT INTO api_keys (key_id, merchant_id, prefix, secret_hash) VALUES ($1, $2, $3, $4)"
        " RETURNING key_id, merchant_id, prefix, created_at, revoked_at",
        new_prefixed_id("key"),
        merchant_id,
        display_prefix(secret),
        hash_api_key(secret),
    )
    if row is None:
        raise InvariantViolation("INSERT ... RETURNING returned no row")
    return IssuedApiKeyView(id=row["key_id"], secret=secret, **_key_fields(row))


def _key_fields(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "merchant_id": row["merchant_id"],
        "prefix": row["prefix"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }


async def _record_profile(
    connection: Connection,
    request: Request,
    merchant_id: str,
    profile: MerchantProfile,
    event_type: type[MerchantOnboarded] | type[MerchantUpdated],
) -> int:
    version = await stream_version(connection, merchant_id)
    await record_decision(
        connection,
        Decision(events=(Emit(event_type, profile),)),
        stream_id=merchant_id,
        expected_version=version,
        merchant_id=merchant_id,
        producer="gateway",
        clock=request.app.state.context.clock,
        cause=None,
    )
    return version + 1


async def _register_webhook(request: Request, merchant_id: str, url: str) -> dict[str, Any]:
    client: httpx.AsyncClient = request.app.state.notifier_client
    try:
        answer = await client.post(
            "/internal/v1/webhook_endpoints",
            json={"merchant_id": merchant_id, "url": url, "events": ["*"]},
        )
    except httpx.HTTPError as error:
        log.warning("webhook_registration_failed", merchant_id=merchant_id, error=repr(error))
        return {"error": {"code": "notifier_unavailable", "detail": repr(error)}}
    body: dict[str, Any] = answer.json()
    return body if answer.status_code == 201 else {"error": body}


@router.post("/merchants", status_code=201, response_model=OnboardedMerchantView)
async def onboard_merchant(body: OnboardMerchantRequest, request: Request) -> Any:
    """Onboard a merchant and issue its first API key (the secret is shown only here).

    With `webhook_url`, also registers a webhook endpoint for every event type and
    returns its signing secret, once.
    """
    _check_fee_plans(body.fee_plans)
    profile = _profile_or_problem(
        body.model_dump(exclude={"merchant_id", "webhook_url"}) | {"status": "active"}
    )
    merchant_id = body.merchant_id or new_prefixed_id("mch")
    pool: asyncpg.Pool = request.app.state.context.pool
    async with pool.acquire() as connection, connection.transaction():
        created = await connection.fetchval(
            "INSERT INTO merchants (merchant_id, profile) VALUES ($1, $2::text::jsonb)"
            " ON CONFLICT DO NOTHING RETURNING true",
            merchant_id,
            profile.model_dump_json(),
        )
        if not created:
            raise ApiProblem(409, "merchant_exists", "Merchant exists", f"{merchant_id} exists.")
        version = await _record_profile(
            connection, request, merchant_id, profile, MerchantOnboarded
        )
        key = await _issue_api_key(
            connection, merchant_id, request.app.state.gateway_settings.api_key_prefix
        )
    request.app.state.context.relay.wake()
    endpoint = (
        await _register_webhook(request, merchant_id, body.webhook_url)
        if body.webhook_url
        else None
    )
    return OnboardedMerchantView(
        merchant=_merchant_view(merchant_id, profile, version),
        api_key=key,
        webhook_endpoint=endpoint,
    )


async def _load_merchant(
    connection: Connection, merchant_id: str, *, for_update: bool = False
) -> MerchantProfile:
    row = await connection.fetchrow(
        "SELECT profile FROM merchants WHERE merchant_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        merchant_id,
    )
    if row is None:
        raise ApiProblem(
            404, "merchant_not_found", "Merchant not found", f"No merchant {merchant_id}."
        )
    return MerchantProfile.model_validate(row["profile"])


@router.get("/merchants/{merchant_id}", response_model=MerchantView)
async def get_merchant(merchant_id: str, request: Request) -> Any:
    async with request.app.state.context.pool.acquire() as connection:
        profile = await _load_merchant(connection, merchant_id)
        return _merchant_view(merchant_id, profile, await stream_version(connection, merchant_id))


@router.patch("/merchants/{merchant_id}", response_model=MerchantView)
async def update_merchant(merchant_id: str, body: UpdateMerchantRequest, request: Request) -> Any:
    """Change a merchant's profile (suspend it with `status: suspended`). Applies to the
    next payment; recorded as `MerchantUpdated`."""
    if body.fee_plans is not None:
        _check_fee_plans(body.fee_plans)
    changes = body.model_dump(exclude_unset=True)
    async with request.app.state.context.pool.acquire() as connection, connection.transaction():
        current = await _load_merchant(connection, merchant_id, for_update=True)
        profile = _profile_or_problem(current.model_dump() | changes)
        if profile == current:
            return _merchant_view(
                merchant_id, profile, await stream_version(connection, merchant_id)
            )
        await connection.execute(
            "UPDATE merchants SET profile = $2::text::jsonb, updated_at = now()"
            " WHERE merchant_id = $1",
            merchant_id,
            profile.model_dump_json(),
        )
        version = await _record_profile(connection, request, merchant_id, profile, MerchantUpdated)
    request.app.state.context.relay.wake()
    log.info("merchant_updated", merchant_id=merchant_id, changed=sorted(changes))
    return _merchant_view(merchant_id, profile, version)


@router.get("/merchants/{merchant_id}/api_keys", response_model=ApiKeyList)
async def list_api_keys(merchant_id: str, request: Request) -> Any:
    """A merchant's API keys by prefix; secrets are never shown again."""
    async with request.app.state.context.pool.acquire() as connection:
        await _load_merchant(connection, merchant_id)
        rows = await connection.fetch(
            "SELECT key_id, merchant_id, prefix, created_at, revoked_at FROM api_keys"
            " WHERE merchant_id = $1 ORDER BY created_at, key_id",
            merchant_id,
        )
    return ApiKeyList(data=[ApiKeyView(id=row["key_id"], **_key_fields(row)) for row in rows])


@router.post("/merchants/{merchant_id}/api_keys", status_code=201, response_model=IssuedApiKeyView)
async def issue_api_key(merchant_id: str, request: Request) -> Any:
    """Issue another API key for a merchant (the secret is shown only here)."""
    async with request.app.state.context.pool.acquire() as connection, connection.transaction():
        await _load_merchant(connection, merchant_id)
        return await _issue_api_key(
            connection, merchant_id, request.app.state.gateway_settings.api_key_prefix
        )


async def _revoke(connection: Connection, key_id: str, at: datetime) -> asyncpg.Record:
    row = await connection.fetchrow(
        "UPDATE api_keys SET revoked_at = LEAST(COALESCE(revoked_at, $2), $2)"
        " WHERE key_id = $1 RETURNING key_id, merchant_id, prefix, created_at, revoked_at",
        key_id,
        at,
    )
    if row is None:
        raise ApiProblem(404, "api_key_not_found", "API key not found", f"No API key {key_id}.")
    return row


@router.post("/api_keys/{key_id}/rotate", status_code=201, response_model=IssuedApiKeyView)
async def rotate_api_key(key_id: str, body: RotateApiKeyRequest, request: Request) -> Any:
    """Issue a new key for the same merchant and revoke this one after `grace_seconds`."""
    context = request.app.state.context
    async with context.pool.acquire() as connection, connection.transaction():
        old = await _revoke(
            connection, key_id, context.clock.now() + timedelta(seconds=body.grace_seconds)
        )
        return await _issue_api_key(
            connection, old["merchant_id"], request.app.state.gateway_settings.api_key_prefix
        )


@router.delete("/api_keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, request: Request) -> Response:
    """Revoke a key now. Revoking a revoked key changes nothing."""
    context = request.app.state.context
    async with context.pool.acquire() as connection:
        await _revoke(connection, key_id, context.clock.now())
    return Response(status_code=204)
