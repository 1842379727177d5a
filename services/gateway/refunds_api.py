"""Merchant API: refunds.

A refund request is decided by payment_center against the payment's refundable amount
(the paid amount minus refunds requested or succeeded), under the payment's optimistic
concurrency: concurrent requests can never refund more than was paid. The request waits
briefly for that decision and answers 201 with the pending refund, or 422 with the
refusal's code; the channel's result arrives later (`refund.succeeded` /
`refund.failed` events and webhooks, or `GET /v1/refunds/{id}`).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, Request, Response

from schemas import new_command
from schemas.refunds import RefundRequest, RequestRefund, new_refund_id
from services.common.db import Connection
from services.common.event_store import enqueue_commands
from services.common.service import ServiceContext
from services.gateway import idempotency
from services.gateway.auth import MerchantDependency
from services.gateway.models import CreateRefundRequest, FailureView, RefundView
from services.gateway.payment_updates import PaymentUpdates
from services.gateway.problems import PROBLEM_RESPONSES, ApiProblem
from services.gateway.projections import REFUND_REFUSED

log = structlog.get_logger(__name__)
router = APIRouter(tags=["refunds"], responses=PROBLEM_RESPONSES)

# The status shown before payment_center has decided the request.
RECEIVED_STATUS = "received"


def refund_view(row: asyncpg.Record) -> RefundView:
    failure = row["failure"]
    return RefundView(
        id=row["refund_id"],
        payment_id=row["payment_id"],
        amount=row["amount_minor"],
        currency=row["currency"],
        channel=row["channel"],
        reason=row["reason"],
        initiator=row["initiator"],
        status=row["status"],
        failure=FailureView.model_validate(failure) if failure is not None else None,
        channel_refund_id=row["channel_refund_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def load_refund(
    pool: asyncpg.Pool | Connection, merchant_id: str, refund_id: str
) -> RefundView | None:
    row = await pool.fetchrow(
        "SELECT * FROM refunds WHERE refund_id = $1 AND merchant_id = $2", refund_id, merchant_id
    )
    return refund_view(row) if row is not None else None


async def payment_refunds(pool: asyncpg.Pool | Connection, payment_id: str) -> list[RefundView]:
    """A payment's refunds, oldest first; refused requests are not refunds."""
    rows = await pool.fetch(
        "SELECT * FROM refunds WHERE payment_id = $1 AND status <> $2"
        " ORDER BY created_at, refund_id",
        payment_id,
        REFUND_REFUSED,
    )
    return [refund_view(row) for row in rows]


async def _wait_for_decision(
    pool: asyncpg.Pool,
    updates: PaymentUpdates,
    merchant_id: str,
    payment_id: str,
    refund_id: str,
    wait_ms: int,
) -> RefundView | None:
    """The refund once payment_center decided it (any status), or None after `wait_ms`."""
    return await updates.wait_for(
        payment_id,
        lambda: load_refund(pool, merchant_id, refund_id),
        lambda view: view is not None,
        wait_ms,
    )


def _answer(view: RefundView, response: Response) -> RefundView:
    """201 for a refund, or the refusal as a problem."""
    if view.status == REFUND_REFUSED:
        failure = view.failure
        code = failure.code if failure is not None else "refund_refused"
        detail = failure.message if failure is not None else ""
        raise ApiProblem(422, code, "Refund refused", detail)
    response.status_code = 201
    return view


@router.post(
    "/v1/payments/{payment_id}/refunds",
    status_code=201,
    response_model=RefundView,
    responses={202: {"model": RefundView, "description": "Received, not decided yet"}},
)
async def create_refund(
    payment_id: str,
    request: Request,
    response: Response,
    merchant: MerchantDependency,
    body: CreateRefundRequest | None = None,
    idempotency_key: idempotency.KeyHeader = None,
) -> Any:
    """Refund part (`amount`) or all that is still refundable of a paid payment.

    Answers 201 with the refund (status `pending` until the channel's result), 422
    `refund_exceeds_captured` when the amount exceeds what is refundable, 422
    `payment_not_paid` for an unpaid payment, or 202 with status `received` when the
    decision takes longer than the wait (read it later with `GET /v1/refunds/{id}`)."""
    body = body or CreateRefundRequest()
    context = request.app.state.context
    settings = request.app.state.gateway_settings
    pool: asyncpg.Pool = context.pool
    refund_id = new_refund_id()
    keyed = idempotency.keyed_request(request, merchant.merchant_id, idempotency_key, body)
    async with pool.acquire() as connection, connection.transaction():
        payment = await connection.fetchrow(
            "SELECT currency, channel FROM payments WHERE payment_id = $1 AND merchant_id = $2",
            payment_id,
            merchant.merchant_id,
        )
        if payment is None:
            raise ApiProblem(
                404, "payment_not_found", "Payment not found", f"No payment {payment_id}."
            )
        if keyed is not None:
            stored = await keyed.claim(connection, refund_id, context.clock.now())
            if stored is not None:
                response.headers["Idempotent-Replayed"] = "true"
                refund_id = stored.resource_id
                if stored.response_body is not None:
                    return _answer(RefundView.model_validate(stored.response_body), response)
                view = await load_refund(connection, merchant.merchant_id, refund_id)
                if view is None:
                    return _received(payment_id, refund_id, body, payment, context, response)
                return _answer(view, response)
        correlation_id = await connection.fetchval(
            "SELECT correlation_id FROM event_store WHERE message_type = 'CreatePayment'"
            " AND message_key = $1",
            payment_id,
        )
        command = new_command(
            RequestRefund,
            RefundRequest(refund_id=refund_id, amount_minor=body.amount, reason=body.reason),
            aggregate_id=payment_id,
            merchant_id=merchant.merchant_id,
            producer="gateway",
            issued_at=context.clock.now(),
            correlation_id=correlation_id or f"corr_{uuid.uuid4().hex}",
            causation_id=None,
        )
        await enqueue_commands(connection, [command])
    context.relay.wake()
    log.info("refund_requested", payment_id=payment_id, refund_id=refund_id)
    view = await _wait_for_decision(
        pool,
        request.app.state.payment_updates,
        merchant.merchant_id,
        payment_id,
        refund_id,
        settings.payment_create_wait_ms,
    )
    if view is None:
        return _received(payment_id, refund_id, body, payment, context, response)
    if keyed is not None:
        await keyed.remember(pool, 422 if view.status == REFUND_REFUSED else 201, view)
    return _answer(view, response)


def _received(
    payment_id: str,
    refund_id: str,
    body: CreateRefundRequest,
    payment: asyncpg.Record,
    context: ServiceContext,
    response: Response,
) -> RefundView:
    response.status_code = 202
    now = context.clock.now()
    return RefundView(
        id=refund_id,
        payment_id=payment_id,
        amount=body.amount,
        currency=payment["currency"],
        channel=payment["channel"],
        reason=body.reason,
        initiator="merchant",
        status=RECEIVED_STATUS,
        created_at=now,
        updated_at=now,
    )


@router.get("/v1/refunds/{refund_id}", response_model=RefundView)
async def get_refund(refund_id: str, request: Request, merchant: MerchantDependency) -> Any:
    """One refund (or a refused request, status `refused`). Another merchant's refund is
    not found."""
    view = await load_refund(request.app.state.context.pool, merchant.merchant_id, refund_id)
    if view is None:
        raise ApiProblem(404, "refund_not_found", "Refund not found", f"No refund {refund_id}.")
    return view
