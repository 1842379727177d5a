"""Merchant API: the public events of the merchant, like Stripe's Events API. Each event
is the same document its webhook carried."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request

from schemas.public_events import PUBLIC_EVENT_TYPES
from services.gateway.auth import MerchantDependency
from services.gateway.listing import (
    LIMIT_DEFAULT,
    CreatedGte,
    CreatedLt,
    Limit,
    Page,
    StartingAfter,
    check_filter,
    page_of,
    unknown_cursor,
)
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

router = APIRouter(tags=["events"], responses=PROBLEM_RESPONSES)

EVENT_TYPES = tuple(sorted(PUBLIC_EVENT_TYPES.values()))


@router.get("/v1/events", response_model=Page)
async def list_events(
    request: Request,
    merchant: MerchantDependency,
    limit: Limit = LIMIT_DEFAULT,
    starting_after: StartingAfter = None,
    type: Annotated[str | None, Query(description=f"One of {EVENT_TYPES}.")] = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
) -> Any:
    """The merchant's events, newest first, filtered by type and time, paginated by cursor."""
    check_filter("type", type, EVENT_TYPES)
    pool: asyncpg.Pool = request.app.state.context.pool
    async with pool.acquire() as connection:
        cursor_id = None
        if starting_after is not None:
            cursor_id = await connection.fetchval(
                "SELECT event_id FROM merchant_events"
                " WHERE event_id::text = $1 AND merchant_id = $2",
                starting_after,
                merchant.merchant_id,
            )
            if cursor_id is None:
                raise unknown_cursor(starting_after)
        rows = await connection.fetch(
            "SELECT event_id::text AS id, document FROM merchant_events WHERE merchant_id = $1"
            " AND ($2::text IS NULL OR type = $2)"
            " AND ($3::timestamptz IS NULL OR created_at >= $3)"
            " AND ($4::timestamptz IS NULL OR created_at < $4)"
            " AND ($5::uuid IS NULL OR (created_at, event_id) <"
            "      (SELECT created_at, event_id FROM merchant_events WHERE event_id = $5))"
            " ORDER BY created_at DESC, event_id DESC LIMIT $6",
            merchant.merchant_id,
            type,
            created_gte,
            created_lt,
            cursor_id,
            limit + 1,
        )
    page, has_more, cursor = page_of(list(rows), limit, "id")
    return Page(data=[row["document"] for row in page], has_more=has_more, next_cursor=cursor)


@router.get("/v1/events/{event_id}")
async def get_event(event_id: str, request: Request, merchant: MerchantDependency) -> Any:
    """One event; another merchant's event is not found."""
    document = await request.app.state.context.pool.fetchval(
        "SELECT document FROM merchant_events WHERE event_id::text = $1 AND merchant_id = $2",
        event_id,
        merchant.merchant_id,
    )
    if document is None:
        raise ApiProblem(404, "event_not_found", "Event not found", f"No event {event_id}.")
    return document
