"""Admin API: onboarding merchants and issuing their API keys. Needs the admin key."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from fastapi import APIRouter, Request

from schemas.merchants import MerchantOnboarded, MerchantOnboardedPayload
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision
from services.common.ids import new_prefixed_id, new_secret
from services.gateway.auth import AdminDependency
from services.gateway.domain import display_prefix, hash_api_key
from services.gateway.models import (
    ApiKeyView,
    MerchantView,
    OnboardedMerchantView,
    OnboardMerchantRequest,
)
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[AdminDependency], responses=PROBLEM_RESPONSES
)


async def _issue_api_key(
    connection: asyncpg.Connection, merchant_id: str, key_prefix: str
) -> ApiKeyView:
    secret = new_secret(key_prefix)
    key = ApiKeyView(id=new_prefixed_id("key"), prefix=display_prefix(secret), secret=secret)
    await connection.execute(
        "INSERT INTO api_keys (key_id, merchant_id, prefix, secret_hash) VALUES ($1, $2, $3, $4)",
        key.id,
        merchant_id,
        key.prefix,
        hash_api_key(secret),
    )
    return key


@router.post("/merchants", status_code=201, response_model=OnboardedMerchantView)
async def onboard_merchant(body: OnboardMerchantRequest, request: Request) -> Any:
    """Onboard a merchant and issue its first API key (the secret is shown only here)."""
    missing = [channel.value for channel in body.channels if channel not in body.fee_plans]
    if missing:
        raise ApiProblem(
            422, "fee_plan_missing", "Fee plan missing", f"no fee plan for channels {missing}"
        )
    context = request.app.state.context
    settings = request.app.state.gateway_settings
    merchant_id = body.merchant_id or new_prefixed_id("mch")
    fee_plans = {channel: body.fee_plans[channel] for channel in body.channels}
    async with context.pool.acquire() as connection, connection.transaction():
        created = await connection.fetchval(
            "INSERT INTO merchants"
            " (merchant_id, name, channels, fee_plans, single_payment_limit_minor)"
            " VALUES ($1, $2, $3, $4::text::jsonb, $5) ON CONFLICT DO NOTHING RETURNING true",
            merchant_id,
            body.name,
            [channel.value for channel in body.channels],
            json.dumps({channel.value: plan.model_dump() for channel, plan in fee_plans.items()}),
            body.single_payment_limit_minor,
        )
        if not created:
            raise ApiProblem(409, "merchant_exists", "Merchant exists", f"{merchant_id} exists.")
        await record_decision(
            connection,
            Decision(
                events=(
                    Emit(
                        MerchantOnboarded,
                        MerchantOnboardedPayload(
                            name=body.name,
                            channels=tuple(body.channels),
                            fee_plans=fee_plans,
                            single_payment_limit_minor=body.single_payment_limit_minor,
                        ),
                    ),
                )
            ),
            stream_id=merchant_id,
            expected_version=0,
            merchant_id=merchant_id,
            producer="gateway",
            clock=context.clock,
            cause=None,
        )
        key = await _issue_api_key(connection, merchant_id, settings.api_key_prefix)
    return OnboardedMerchantView(
        merchant=MerchantView(
            id=merchant_id,
            name=body.name,
            channels=[channel.value for channel in body.channels],
            fee_plans={channel.value: plan for channel, plan in fee_plans.items()},
            single_payment_limit_minor=body.single_payment_limit_minor,
            status="active",
        ),
        api_key=key,
    )


@router.post("/merchants/{merchant_id}/api_keys", status_code=201, response_model=ApiKeyView)
async def issue_api_key(merchant_id: str, request: Request) -> Any:
    """Issue another API key for a merchant (the secret is shown only here)."""
    context = request.app.state.context
    async with context.pool.acquire() as connection, connection.transaction():
        exists = await connection.fetchval(
            "SELECT true FROM merchants WHERE merchant_id = $1", merchant_id
        )
        if not exists:
            raise ApiProblem(404, "merchant_not_found", "Merchant not found", merchant_id)
        return await _issue_api_key(
            connection, merchant_id, request.app.state.gateway_settings.api_key_prefix
        )
