"""Merchant API: payments and balance."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Header, Query, Request, Response

from schemas import new_command
from schemas.common import Channel
from schemas.payments import CancelPayment, CancelPaymentPayload, CreatePayment, Split
from services.common.db import Connection
from services.common.event_store import enqueue_commands
from services.common.ids import new_prefixed_id
from services.gateway import idempotency
from services.gateway.auth import MerchantDependency
from services.gateway.channel_health import ChannelHealth
from services.gateway.domain import (
    FINAL_STATUSES,
    RECEIVED_STATUS,
    SETTLED_VIEW_STATUSES,
    STATUS_AFTER_EVENT,
)
from services.gateway.intake import (
    PaymentRefused,
    active_merchant_ids,
    choose_channel,
    payment_request,
)
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
from services.gateway.refunds_api import payment_refunds

log = structlog.get_logger(__name__)
router = APIRouter(tags=["payments"], responses=PROBLEM_RESPONSES)

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
        amount_refunded=row["amount_refunded_minor"],
        metadata=row["metadata"],
        splits=row["splits"],
        expires_at=row["expires_at"],
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
    return await updates.wait_for(
        payment_id,
        lambda: _load_view(pool, merchant_id, payment_id),
        lambda view: view is not None and view.status in statuses,
        wait_ms,
    )


def _received_view(
    payment_id: str, merchant_id: str, body: CreatePaymentRequest, channel: Channel
) -> PaymentView:
    return PaymentView(
        id=payment_id,
        merchant_id=merchant_id,
        order_id=body.order_id,
        amount=body.amount,
        currency=body.currency,
        channel=channel.value,
        description=body.description,
        status=RECEIVED_STATUS,
        metadata=body.metadata,
    )


@router.post("/v1/payments", status_code=201, response_model=PaymentView)
async def create_payment(
    body: CreatePaymentRequest,
    request: Request,
    response: Response,
    merchant: MerchantDependency,
    idempotency_key: idempotency.KeyHeader = None,
    correlation_id: CorrelationId = None,
) -> Any:
    """Create a payment. It is decided by risk and prepared at the channel asynchronously;
    the call waits briefly so the answer usually carries `next_action` already.

    The channel is `channel`, or the first of `channels` (all the merchant's channels
    when neither is given) that the merchant has enabled and that is not failing: a
    failing channel (its circuit open at the connector) is skipped, and when every
    allowed channel is failing the payment is refused at once with `channel_unavailable`
    (503)."""
    context = request.app.state.context
    settings = request.app.state.gateway_settings
    health: ChannelHealth = request.app.state.channel_health
    failing = await health.failing()
    try:
        channel = choose_channel(
            merchant, body.channel_candidates(), lambda candidate: candidate.value not in failing
        )
        splits = [Split(recipient_id=s.recipient, amount_minor=s.amount) for s in body.splits]
        payment = payment_request(
            merchant,
            order_id=body.order_id,
            amount_minor=body.amount,
            currency=body.currency,
            channel=channel,
            description=body.description,
            requested_at=context.clock.now(),
            payer=body.payer,
            metadata=body.metadata,
            splits=splits,
            active_recipients=await active_merchant_ids(
                context.pool, [split.recipient_id for split in splits]
            ),
            expires_in=(
                timedelta(seconds=body.expires_in_seconds)
                if body.expires_in_seconds is not None
                else None
            ),
        )
    except PaymentRefused as refusal:
        status = 503 if refusal.code == "channel_unavailable" else 422
        raise ApiProblem(status, refusal.code, "Payment refused", refusal.message) from refusal
    pool: asyncpg.Pool = context.pool
    payment_id = new_prefixed_id("pay")
    correlation = correlation_id or f"corr_{uuid.uuid4().hex}"
    keyed = idempotency.keyed_request(request, merchant.merchant_id, idempotency_key, body)
    async with pool.acquire() as connection, connection.transaction():
        if keyed is not None:
            stored = await keyed.claim(connection, payment_id, context.clock.now())
            if stored is not None:
                response.headers["Idempotent-Replayed"] = "true"
                if stored.response_body is not None:
                    response.status_code = stored.response_status or 201
                    return PaymentView.model_validate(stored.response_body)
                # The first request is still waiting for its answer: show the payment now.
                response.status_code = 200
                return await _load_view(
                    connection, merchant.merchant_id, stored.resource_id
                ) or _received_view(stored.resource_id, merchant.merchant_id, body, channel)
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
    # Committed: the relay of this process publishes the command now rather than at its
    # next poll, which this request is about to wait for.
    context.relay.wake()
    log.info("payment_requested", payment_id=payment_id, correlation_id=correlation)
    response.headers["X-Correlation-Id"] = correlation
    view = await _wait_for_status(
        pool,
        request.app.state.payment_updates,
        merchant.merchant_id,
        payment_id,
        SETTLED_VIEW_STATUSES,
        settings.payment_create_wait_ms,
    ) or _received_view(payment_id, merchant.merchant_id, body, channel)
    if keyed is not None:
        await keyed.remember(pool, 201, view)
    return view


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
    """A payment with its refunds and event history. Another merchant's payment is not
    found."""
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
    refunds = await payment_refunds(pool, payment_id)
    return PaymentDetailView(**view.model_dump(), refunds=refunds, events=events)


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
                reserve=buckets.get("reserve", 0),
                in_transit=buckets.get("payouts_in_transit", 0),
            )
            for currency, buckets in by_currency.items()
        ],
    )


@router.post("/v1/payments/{payment_id}/cancel", response_model=PaymentView)
async def cancel_payment(
    payment_id: str,
    request: Request,
    merchant: MerchantDependency,
    response: Response,
    body: CancelPaymentRequest | None = None,
    idempotency_key: idempotency.KeyHeader = None,
) -> Any:
    """Cancel an unpaid payment; its channel trade is closed too. Canceling a canceled
    payment returns it unchanged; a payment that is already over cannot be canceled.
    With an Idempotency-Key, a repeat returns the first successful answer as it was."""
    context = request.app.state.context
    pool: asyncpg.Pool = context.pool
    keyed = idempotency.keyed_request(request, merchant.merchant_id, idempotency_key, body)
    if keyed is not None:
        async with pool.acquire() as connection, connection.transaction():
            stored = await keyed.claim(connection, payment_id, context.clock.now())
        if stored is not None and stored.response_body is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return PaymentView.model_validate(stored.response_body)
    view = await _cancel(request, merchant.merchant_id, payment_id, body)
    if keyed is not None:
        await keyed.remember(pool, 200, view)
    return view


async def _cancel(
    request: Request, merchant_id: str, payment_id: str, body: CancelPaymentRequest | None
) -> PaymentView:
    context = request.app.state.context
    pool: asyncpg.Pool = context.pool
    view = await _load_view(pool, merchant_id, payment_id)
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
                merchant_id=merchant_id,
                producer="gateway",
                issued_at=context.clock.now(),
                correlation_id=correlation_id or f"corr_{uuid.uuid4().hex}",
                causation_id=None,
            )
            await enqueue_commands(connection, [command])
        context.relay.wake()
        view = await _wait_for_status(
            pool,
            request.app.state.payment_updates,
            merchant_id,
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
