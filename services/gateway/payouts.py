"""The gateway's side of payouts: it talks to the bank rail for the ledger, records what
the rail said, and keeps the payouts merchants read.

The ledger sends `SubmitBankPayout`; the connector sends the payout to the rail (the
payout id is the rail's idempotency key, so a payout sent again pays once; an answer that
leaves the outcome unknown is sent again on a schedule, never recorded as a failure). A
refusal of an invalid request is recorded at once as `BankPayoutFailed`; the final status
arrives as a signed notification and is recorded as `BankPayoutPaid` or
`BankPayoutFailed`, once per payout (stream = payout id in the gateway's event store). The
ledger closes the payout from it.
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
from services.common.event_store import record_decision, stream_version
from services.gateway.channels.bank import VerifiedPayoutResult
from services.gateway.projections import record_public_event

log = structlog.get_logger(__name__)

PRODUCER = "gateway"


async def record_payout_sent(
    connection: Connection, command: SubmitBankPayout, bank_reference: str, *, clock: Clock
) -> None:
    """Remember that the rail took the payout under `bank_reference`; its final word
    arrives later as a notification (`record_payout_notification`)."""
    await _remember_sent(
        connection, command.payload.payout_id, command.merchant_id, bank_reference, clock
    )
    log.info("bank_payout_sent", payout_id=command.payload.payout_id, bank_reference=bank_reference)


async def _remember_sent(
    connection: Connection, payout_id: str, merchant_id: str, bank_reference: str, clock: Clock
) -> None:
    await connection.execute(
        "INSERT INTO bank_payouts (payout_id, merchant_id, bank_reference, sent_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        payout_id,
        merchant_id,
        bank_reference,
        clock.now(),
    )


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

    A payout whose sending got no definite answer yet (an open operation with a call made)
    is known too: the notification settles it. Returns False when the payout's result is
    recorded already. Raises LookupError for a payout never sent (the rail retries)."""
    merchant_id = await connection.fetchval(
        "SELECT merchant_id FROM bank_payouts WHERE payout_id = $1", result.payout_id
    )
    if merchant_id is None:
        # Sent, but the rail's answer was lost (a 429 or a timeout after it took the
        # transfer): the notification is the definite answer the connector is waiting for.
        merchant_id = await connection.fetchval(
            "SELECT command_body::jsonb ->> 'merchant_id' FROM channel_operations"
            " WHERE kind = 'submit_payout' AND subject_id = $1 AND attempts > 0",
            result.payout_id,
        )
        if merchant_id is None:
            raise LookupError(f"unknown payout {result.payout_id}")
        await _remember_sent(
            connection, result.payout_id, merchant_id, result.bank_reference, clock
        )
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
