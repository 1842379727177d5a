"""The gateway's side of payouts: it talks to the bank rail for the ledger, records what
the rail said, and keeps the payouts merchants read.

The ledger sends `SubmitBankPayout`; the gateway sends the payout to the rail (the payout
id is the rail's idempotency key, so a redelivered command pays once). A refusal is
recorded at once as `BankPayoutFailed`; the final status arrives as a signed
notification and is recorded as `BankPayoutPaid` or `BankPayoutFailed`, once per payout
(stream = payout id in the gateway's event store). The ledger closes the payout from it.
"""

from __future__ import annotations

import asyncpg
import structlog

from schemas.common import Failure
from schemas.payouts import (
    BankPayoutFailed,
    BankPayoutFailedPayload,
    BankPayoutPaid,
    BankPayoutPaidPayload,
    PayoutCreated,
    PayoutFailed,
    PayoutPaid,
    PayoutStatus,
    SubmitBankPayout,
)
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.errors import TransientError
from services.common.event_store import record_decision, stream_version
from services.gateway.channels.bank import BankRailClient, VerifiedPayoutResult
from services.gateway.channels.base import ChannelRejected, ChannelUnavailable
from services.gateway.projections import record_public_event

log = structlog.get_logger(__name__)

PRODUCER = "gateway"


async def submit_bank_payout(
    connection: asyncpg.Connection,
    command: SubmitBankPayout,
    *,
    rail: BankRailClient,
    clock: Clock,
) -> None:
    """Send the payout to the bank rail. Raises TransientError while the rail's answer is
    unknown (the payout is retried, never dropped: the money is already in transit)."""
    request = command.payload
    if await stream_version(connection, request.payout_id) > 0:
        log.info("bank_payout_already_closed", payout_id=request.payout_id)
        return
    try:
        bank_reference = await rail.send_payout(
            payout_id=request.payout_id,
            amount_minor=request.amount_minor,
            currency=request.currency,
            beneficiary=command.merchant_id,
        )
    except ChannelUnavailable as error:
        raise TransientError(f"bank rail: {error}") from error
    except ChannelRejected as error:
        failure = Failure(code=f"bank_{error.code}"[:64], message=error.message or error.code)
        await record_payout_result(
            connection,
            command.merchant_id,
            request.payout_id,
            failure=failure,
            bank_reference=None,
            clock=clock,
            cause=command,
        )
        return
    await connection.execute(
        "INSERT INTO bank_payouts (payout_id, merchant_id, bank_reference, sent_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        request.payout_id,
        command.merchant_id,
        bank_reference,
        clock.now(),
    )
    log.info("bank_payout_sent", payout_id=request.payout_id, bank_reference=bank_reference)


async def record_payout_result(
    connection: Connection,
    merchant_id: str,
    payout_id: str,
    *,
    failure: Failure | None,
    bank_reference: str | None,
    clock: Clock,
    cause: SubmitBankPayout | None = None,
) -> bool:
    """Record the rail's final word on a payout once; False when one is recorded already.

    Raises ConcurrencyConflict when another writer recorded it at the same moment (the
    caller tries again and then finds it recorded)."""
    if await stream_version(connection, payout_id) > 0:
        return False
    if failure is None:
        if bank_reference is None:
            raise ValueError("a paid payout needs the bank's reference")
        emit = Emit(
            BankPayoutPaid,
            BankPayoutPaidPayload(payout_id=payout_id, bank_reference=bank_reference),
        )
    else:
        emit = Emit(BankPayoutFailed, BankPayoutFailedPayload(payout_id=payout_id, failure=failure))
    await record_decision(
        connection,
        Decision(events=(emit,)),
        stream_id=payout_id,
        expected_version=0,
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=cause,
    )
    log.info("bank_payout_result_recorded", payout_id=payout_id, paid=failure is None)
    return True


async def record_payout_notification(
    connection: Connection, result: VerifiedPayoutResult, *, clock: Clock
) -> bool:
    """Record a verified notification about a payout the gateway sent.

    Returns False when the payout's result is recorded already. Raises LookupError for a
    payout the gateway never sent (or whose sending is not committed yet: the rail
    retries later)."""
    merchant_id = await connection.fetchval(
        "SELECT merchant_id FROM bank_payouts WHERE payout_id = $1", result.payout_id
    )
    if merchant_id is None:
        raise LookupError(f"unknown payout {result.payout_id}")
    failure = (
        None
        if result.paid
        else Failure(
            code=f"bank_{result.failure_code}"[:64], message="the bank did not pay the payout"
        )
    )
    return await record_payout_result(
        connection,
        merchant_id,
        result.payout_id,
        failure=failure,
        bank_reference=result.bank_reference,
        clock=clock,
    )


async def project_payout(
    connection: asyncpg.Connection, event: PayoutCreated | PayoutPaid | PayoutFailed
) -> None:
    """Keep the payouts merchants read (a payout's status changes only from in_transit),
    and its public `payout.paid` / `payout.failed` event."""
    payload = event.payload
    await record_public_event(connection, event)
    if isinstance(event, PayoutCreated):
        await connection.execute(
            "INSERT INTO payouts (payout_id, merchant_id, currency, amount_minor, payout_date,"
            " status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
            " ON CONFLICT DO NOTHING",
            event.payload.payout_id,
            event.merchant_id,
            event.payload.currency,
            event.payload.amount_minor,
            event.payload.payout_date,
            PayoutStatus.IN_TRANSIT.value,
            event.occurred_at,
        )
        return
    status, bank_reference, failure = (
        (PayoutStatus.PAID, event.payload.bank_reference, None)
        if isinstance(event, PayoutPaid)
        else (PayoutStatus.FAILED, None, event.payload.failure.model_dump_json())
    )
    await connection.execute(
        "UPDATE payouts SET status = $2, bank_reference = $3, failure = $4::text::jsonb,"
        " updated_at = $5 WHERE payout_id = $1 AND status = $6",
        payload.payout_id,
        status.value,
        bank_reference,
        failure,
        event.occurred_at,
        PayoutStatus.IN_TRANSIT.value,
    )
