"""Merchant API: payments and balance."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Header, Query, Request, Response

from schemas import new_command
from schemas.common import Channel
from schemas.payments import CancelPayment, CancelPaymentPayload, CreatePayment
from services.common.db import Connection
from services.common.event_store import enqueue_commands
from services.common.ids import new_prefixed_id
from services.common.invariant import InvariantViolation
from services.gateway.auth import MerchantDependency
from services.gateway.domain import (
    FINAL_STATUSES,
    RECEIVED_STATUS,
    SETTLED_VIEW_STATUSES,
    STATUS_AFTER_EVENT,
    request_fingerprint,
)
from services.gateway.intake import PaymentRefused, payment_request
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
from services.gateway.models import (
    BalanceAmount,
    BalanceView,
    CancelPaymentRequest,
    CreatePaymentRequest,
    PaymentDetailView,
    PaymentEventView,
    PaymentView,
)
from services.gateway.payment_updates import PaymentUpdates
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem

log = structlog.get_logger(__name__)
router = APIRouter(tags=["payments"], responses=PROBLEM_RESPONSES)

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Client-chosen key."),
]
CorrelationId = Annotated[
    str | None, Header(alias="X-Correlation-Id", min_length=1, max_length=128)
]


def _view(row: asyncpg.Record) -> PaymentView:
    return PaymentView(
        id=row["payment_id"],
        merchant_id=row["merchant_id"],
        order_id=row["order_id"],
        amount=row["amount_minor"],
        currency=row["currency"],
        channel=row["channel"],
        description=row["description"],
        status=row["status"],
        next_action=row["next_action"],
        failure=row["failure"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _load_view(
    pool: asyncpg.Pool | Connection, merchant_id: str, payment_id: str
) -> PaymentView | None:
    row = await pool.fetchrow(
        "SELECT * FROM payments WHERE payment_id = $1 AND merchant_id = $2", payment_id, merchant_id
    )
    return _view(row) if row is not None else None


async def _wait_for_status(
    pool: asyncpg.Pool,
    updates: PaymentUpdates,
    merchant_id: str,
    payment_id: str,
    statuses: frozenset[str],
    wait_ms: int,
) -> PaymentView | None:
    """The payment once its status is one of `statuses`, or as it is after `wait_ms`."""
    deadline = time.monotonic() + wait_ms / 1000
    with updates.watch(payment_id) as changed:
        view = await _load_view(pool, merchant_id, payment_id)
        while view is None or view.status not in statuses:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=remaining_s)
            changed.clear()
            view = await _load_view(pool, merchant_id, payment_id)
    return view


def _received_view(payment_id: str, merchant_id: str, body: CreatePaymentRequest) -> PaymentView:
    return PaymentView(
        id=payment_id,
        merchant_id=merchant_id,
        order_id=body.order_id,
        amount=body.amount,
        currency=body.currency,
        channel=body.channel.value,
        description=body.description,
        status=RECEIVED_STATUS,
    )


@router.post("/v1/payments", status_code=201, response_model=PaymentView)
async def create_payment(
    body: CreatePaymentRequest,
    request: Request,
    response: Response,
    merchant: MerchantDependency,
    idempotency_key: IdempotencyKey = None,
    correlation_id: CorrelationId = None,
) -> Any:
    """Create a payment. It is decided by risk and prepared at the channel asynchronously;
    the call waits briefly so the answer usually carries `next_action` already."""
    try:
        payment = payment_request(
            merchant,
            order_id=body.order_id,
            amount_minor=body.amount,
            currency=body.currency,
            channel=body.channel,
            description=body.description,
            requested_at=request.app.state.context.clock.now(),
        )
    except PaymentRefused as refusal:
        raise ApiProblem(422, refusal.code, "Payment refused", refusal.message) from refusal
    context = request.app.state.context
    settings = request.app.state.gateway_settings
    pool: asyncpg.Pool = context.pool
    payment_id = new_prefixed_id("pay")
    correlation = correlation_id or f"corr_{uuid.uuid4().hex}"
    fingerprint = request_fingerprint("POST", "/v1/payments", body.model_dump(mode="json"))
    async with pool.acquire() as connection, connection.transaction():
        if idempotency_key is not None:
            # A key is remembered for the retention period; after it the key is free to
            # name a new request. Two requests with one key serialise on the row.
            now = context.clock.now()
            claimed = await connection.fetchval(
                "INSERT INTO idempotency_keys"
                " (merchant_id, idempotency_key, request_hash, payment_id, created_at)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (merchant_id, idempotency_key) DO UPDATE SET"
                " request_hash = EXCLUDED.request_hash, payment_id = EXCLUDED.payment_id,"
                " response_status = NULL, response_body = NULL, created_at = EXCLUDED.created_at"
                " WHERE idempotency_keys.created_at < $6 RETURNING true",
                merchant.merchant_id,
                idempotency_key,
                fingerprint,
                payment_id,
                now,
                now - timedelta(hours=settings.idempotency_key_retention_hours),
            )
            if not claimed:
                return await _replay(
                    connection,
                    merchant.merchant_id,
                    idempotency_key,
                    fingerprint,
                    body,
                    response,
                )
        command = new_command(
            CreatePayment,
            payment,
            aggregate_id=payment_id,
            merchant_id=merchant.merchant_id,
            producer="gateway",
            issued_at=context.clock.now(),
            correlation_id=correlation,
            causation_id=None,
        )
        await enqueue_commands(connection, [command])
    log.info("payment_requested", payment_id=payment_id, correlation_id=correlation)
    response.headers["X-Correlation-Id"] = correlation
    view = await _wait_for_status(
        pool,
        request.app.state.payment_updates,
        merchant.merchant_id,
        payment_id,
        SETTLED_VIEW_STATUSES,
        settings.payment_create_wait_ms,
    ) or _received_view(payment_id, merchant.merchant_id, body)
    if idempotency_key is not None:
        await pool.execute(
            "UPDATE idempotency_keys SET response_status = 201, response_body = $3::text::jsonb"
            " WHERE merchant_id = $1 AND idempotency_key = $2",
            merchant.merchant_id,
            idempotency_key,
            view.model_dump_json(),
        )
    return view


async def _replay(
    connection: Connection,
    merchant_id: str,
    idempotency_key: str,
    fingerprint: bytes,
    body: CreatePaymentRequest,
    response: Response,
) -> Any:
    row = await connection.fetchrow(
        "SELECT request_hash, payment_id, response_status, response_body FROM idempotency_keys"
        " WHERE merchant_id = $1 AND idempotency_key = $2",
        merchant_id,
        idempotency_key,
    )
    if row is None:
        raise InvariantViolation("an idempotency key that conflicted has no row")
    if row["request_hash"] != fingerprint:
        raise ApiProblem(
            422,
            "idempotency_key_reused",
            "Idempotency-Key reused",
            "This Idempotency-Key was used with a different request.",
        )
    response.headers["Idempotent-Replayed"] = "true"
    if row["response_body"] is not None:
        response.status_code = row["response_status"]
        return PaymentView.model_validate(row["response_body"])
    # The first request is still waiting for its answer: show the payment as it is now.
    response.status_code = 200
    return await _load_view(connection, merchant_id, row["payment_id"]) or _received_view(
        row["payment_id"], merchant_id, body
    )


PAYMENT_STATUSES = (RECEIVED_STATUS, *STATUS_AFTER_EVENT.values())


class PaymentPage(Page):
    data: list[PaymentView]


@router.get("/v1/payments", response_model=PaymentPage)
async def list_payments(
    request: Request,
    merchant: MerchantDependency,
    limit: Limit = LIMIT_DEFAULT,
    starting_after: StartingAfter = None,
    status: Annotated[str | None, Query(description=f"One of {PAYMENT_STATUSES}.")] = None,
    channel: Channel | None = None,
    order_id: Annotated[str | None, Query(max_length=128)] = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
) -> Any:
    """The merchant's payments, newest first, filtered and paginated by cursor."""
    check_filter("status", status, PAYMENT_STATUSES)
    pool: asyncpg.Pool = request.app.state.context.pool
    async with pool.acquire() as connection:
        if starting_after is not None and not await connection.fetchval(
            "SELECT true FROM payments WHERE payment_id = $1 AND merchant_id = $2",
            starting_after,
            merchant.merchant_id,
        ):
            raise unknown_cursor(starting_after)
        rows = await connection.fetch(
            "SELECT * FROM payments WHERE merchant_id = $1"
            " AND ($2::text IS NULL OR status = $2)"
            " AND ($3::text IS NULL OR channel = $3)"
            " AND ($4::text IS NULL OR order_id = $4)"
            " AND ($5::timestamptz IS NULL OR created_at >= $5)"
            " AND ($6::timestamptz IS NULL OR created_at < $6)"
            " AND ($7::text IS NULL OR (created_at, payment_id) <"
            "      (SELECT created_at, payment_id FROM payments WHERE payment_id = $7))"
            " ORDER BY created_at DESC, payment_id DESC LIMIT $8",
            merchant.merchant_id,
            status,
            channel.value if channel else None,
            order_id,
            created_gte,
            created_lt,
            starting_after,
            limit + 1,
        )
    page, has_more, cursor = page_of(list(rows), limit, "payment_id")
    return PaymentPage(data=[_view(row) for row in page], has_more=has_more, next_cursor=cursor)


@router.get("/v1/payments/{payment_id}", response_model=PaymentDetailView)
async def get_payment(payment_id: str, request: Request, merchant: MerchantDependency) -> Any:
    """A payment with its event history. Another merchant's payment is not found."""
    pool: asyncpg.Pool = request.app.state.context.pool
    view = await _load_view(pool, merchant.merchant_id, payment_id)
    if view is None:
        raise ApiProblem(404, "payment_not_found", "Payment not found", f"No payment {payment_id}.")
    rows = await pool.fetch(
        "SELECT event_id, event_type, aggregate_version, occurred_at, data FROM payment_timeline"
        " WHERE payment_id = $1 ORDER BY aggregate_version",
        payment_id,
    )
    events = [
        PaymentEventView(
            id=str(row["event_id"]),
            type=row["event_type"],
            aggregate_version=row["aggregate_version"],
            occurred_at=row["occurred_at"],
            data=row["data"],
        )
        for row in rows
    ]
    return PaymentDetailView(**view.model_dump(), events=events)


@router.get("/v1/balance", response_model=BalanceView)
async def get_balance(request: Request, merchant: MerchantDependency) -> Any:
    """The merchant's balances per currency, projected from the ledger's journal entries."""
    rows = await request.app.state.context.pool.fetch(
        "SELECT currency, bucket, amount_minor FROM balances WHERE merchant_id = $1"
        " ORDER BY currency",
        merchant.merchant_id,
    )
    by_currency: dict[str, dict[str, int]] = {}
    for row in rows:
        by_currency.setdefault(row["currency"], {})[row["bucket"]] = row["amount_minor"]
    return BalanceView(
        merchant_id=merchant.merchant_id,
        balances=[
            BalanceAmount(
                currency=currency,
                pending=buckets.get("pending", 0),
                available=buckets.get("available", 0),
            )
            for currency, buckets in by_currency.items()
        ],
    )


@router.post("/v1/payments/{payment_id}/cancel", response_model=PaymentView)
async def cancel_payment(
    payment_id: str,
    request: Request,
    merchant: MerchantDependency,
    body: CancelPaymentRequest | None = None,
) -> Any:
    """Cancel an unpaid payment; its channel trade is closed too. Canceling a canceled
    payment returns it unchanged; a payment that is already over cannot be canceled."""
    context = request.app.state.context
    pool: asyncpg.Pool = context.pool
    view = await _load_view(pool, merchant.merchant_id, payment_id)
    if view is None:
        raise ApiProblem(404, "payment_not_found", "Payment not found", f"No payment {payment_id}.")
    if view.status not in FINAL_STATUSES:
        reason = body.reason if body is not None else "requested_by_merchant"
        async with pool.acquire() as connection, connection.transaction():
            correlation_id = await connection.fetchval(
                "SELECT correlation_id FROM event_store WHERE message_type = 'CreatePayment'"
                " AND message_key = $1",
                payment_id,
            )
            command = new_command(
                CancelPayment,
                CancelPaymentPayload(reason=reason),
                aggregate_id=payment_id,
                merchant_id=merchant.merchant_id,
                producer="gateway",
                issued_at=context.clock.now(),
                correlation_id=correlation_id or f"corr_{uuid.uuid4().hex}",
                causation_id=None,
            )
            await enqueue_commands(connection, [command])
        view = await _wait_for_status(
            pool,
            request.app.state.payment_updates,
            merchant.merchant_id,
            payment_id,
            FINAL_STATUSES,
            request.app.state.gateway_settings.payment_create_wait_ms,
        )
    if view is None or view.status != "canceled":
        status = view.status if view else "unknown"
        raise ApiProblem(
            409,
            "payment_not_cancelable",
            "Payment cannot be canceled",
            f"payment {payment_id} is {status}",
        )
    return view
