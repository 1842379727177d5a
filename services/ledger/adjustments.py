"""Manual adjustments: operations correct a merchant's available balance with a reason,
and reverse a mistaken adjustment with the opposite one. The journal is never edited.

An adjustment is identified by the merchant and the caller's `reference`: the same
request again returns the adjustment already posted, while the same reference with other
figures is a conflict. A reversal is posted once; a reversal cannot itself be reversed
(post a new adjustment instead).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from schemas.ledger import AdjustmentPosted, AdjustmentPostedPayload
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision
from services.ledger.domain import ADJUSTMENT_ENTRY_RULES
from services.ledger.handlers import PRODUCER, post_entry

log = structlog.get_logger(__name__)

_ADJUSTMENT_NAMESPACE = uuid.UUID("5f0e9d7c-2b4a-4c61-8e3f-7a9b1c2d3e4f")


class AdjustmentRefused(Exception):
    """An adjustment that cannot be posted; `code` and `status` are for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Adjustment:
    adjustment_id: str
    merchant_id: str
    reference: str
    currency: str
    amount_minor: int
    reason: str
    reverses: str | None
    created_at: datetime


def adjustment_id_for(merchant_id: str, reference: str) -> str:
    return f"adj_{uuid.uuid5(_ADJUSTMENT_NAMESPACE, f'{merchant_id}/{reference}').hex}"


def _adjustment(row: asyncpg.Record) -> Adjustment:
    return Adjustment(
        adjustment_id=row["adjustment_id"],
        merchant_id=row["merchant_id"],
        reference=row["reference"],
        currency=row["currency"].strip(),
        amount_minor=row["amount_minor"],
        reason=row["reason"],
        reverses=row["reverses"],
        created_at=row["created_at"],
    )


async def post_adjustment(
    pool: asyncpg.Pool,
    *,
    merchant_id: str,
    reference: str,
    currency: str,
    amount_minor: int,
    reason: str,
    clock: Clock,
) -> tuple[Adjustment, bool]:
    """Post an adjustment once; returns it and whether it was posted now.

    Raises AdjustmentRefused: 404 `merchant_not_found` for a merchant the ledger does not
    know, 409 `adjustment_reference_reused` when the reference names other figures.
    """
    async with pool.acquire() as connection, connection.transaction():
        if not await connection.fetchval(
            "SELECT true FROM merchant_terms WHERE merchant_id = $1", merchant_id
        ):
            raise AdjustmentRefused(404, "merchant_not_found", f"no merchant {merchant_id}")
        adjustment_id = adjustment_id_for(merchant_id, reference)
        existing = await _lock(connection, adjustment_id)
        if existing is not None:
            if (existing.currency, existing.amount_minor, existing.reason) != (
                currency,
                amount_minor,
                reason,
            ):
                raise AdjustmentRefused(
                    409,
                    "adjustment_reference_reused",
                    f"reference {reference!r} names another adjustment",
                )
            return existing, False
        payload = AdjustmentPostedPayload(
            adjustment_id=adjustment_id, currency=currency, amount_minor=amount_minor, reason=reason
        )
        return await _record(connection, merchant_id, reference, payload, clock), True


async def reverse_adjustment(
    pool: asyncpg.Pool, adjustment_id: str, *, reason: str, clock: Clock
) -> tuple[Adjustment, bool]:
    """Post the reversal of an adjustment once; returns it and whether it was posted now.

    Raises AdjustmentRefused: 404 `adjustment_not_found`, 409 `adjustment_is_reversal`.
    """
    async with pool.acquire() as connection, connection.transaction():
        original = await _lock(connection, adjustment_id)
        if original is None:
            raise AdjustmentRefused(404, "adjustment_not_found", f"no adjustment {adjustment_id}")
        if original.reverses is not None:
            raise AdjustmentRefused(
                409, "adjustment_is_reversal", "a reversal is not reversed; post an adjustment"
            )
        reversal = await connection.fetchrow(
            "SELECT * FROM adjustments WHERE reverses = $1", adjustment_id
        )
        if reversal is not None:
            return _adjustment(reversal), False
        reference = f"reversal:{adjustment_id}"
        payload = AdjustmentPostedPayload(
            adjustment_id=adjustment_id_for(original.merchant_id, reference),
            currency=original.currency,
            amount_minor=-original.amount_minor,
            reason=reason,
            reverses=adjustment_id,
        )
        return await _record(connection, original.merchant_id, reference, payload, clock), True


async def _lock(connection: Connection, adjustment_id: str) -> Adjustment | None:
    # Serialises concurrent requests for one adjustment (and its reversal).
    await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", adjustment_id)
    row = await connection.fetchrow(
        "SELECT * FROM adjustments WHERE adjustment_id = $1", adjustment_id
    )
    return _adjustment(row) if row is not None else None


async def _record(
    connection: Connection,
    merchant_id: str,
    reference: str,
    payload: AdjustmentPostedPayload,
    clock: Clock,
) -> Adjustment:
    (event,) = await record_decision(
        connection,
        Decision(events=(Emit(AdjustmentPosted, payload),)),
        stream_id=payload.adjustment_id,
        expected_version=0,
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=payload.adjustment_id,
    )
    kind, postings_of = ADJUSTMENT_ENTRY_RULES[type(event)]
    await post_entry(connection, event, kind, postings_of(event), clock=clock)
    await connection.execute(
        "INSERT INTO adjustments (adjustment_id, merchant_id, reference, currency, amount_minor,"
        " reason, reverses, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        payload.adjustment_id,
        merchant_id,
        reference,
        payload.currency,
        payload.amount_minor,
        payload.reason,
        payload.reverses,
        event.occurred_at,
    )
    log.info("adjustment_posted", adjustment_id=payload.adjustment_id, reverses=payload.reverses)
    return Adjustment(
        adjustment_id=payload.adjustment_id,
        merchant_id=merchant_id,
        reference=reference,
        currency=payload.currency,
        amount_minor=payload.amount_minor,
        reason=payload.reason,
        reverses=payload.reverses,
        created_at=event.occurred_at,
    )
