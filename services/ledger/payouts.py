"""Payout runs and payout results: the ledger's side of paying merchants.

A run holds a transaction-level advisory lock and locks each available balance it reads,
so a payout never pays more than is available at the moment it is posted. A merchant,
currency and day has at most one payout (the payout id derives from them), so running a
day twice pays nothing more. The bank rail's answer arrives later as a channel result;
a payout is closed once, and its `PayoutFailed` returns the amount to available.
"""

from __future__ import annotations

from datetime import date

import asyncpg
import structlog

from schemas.common import Failure
from schemas.envelope import Event
from schemas.payouts import (
    BankPayoutFailed,
    BankPayoutPaid,
    BankPayoutRequest,
    PayoutCreated,
    PayoutCreatedPayload,
    PayoutFailed,
    PayoutFailedPayload,
    PayoutPaid,
    PayoutPaidPayload,
    PayoutStatus,
    PayoutSummary,
    SubmitBankPayout,
    payout_id_for,
)
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit, Send
from services.common.event_store import record_decision, stream_version
from services.ledger.domain import merchant_available_account
from services.ledger.handlers import PRODUCER, post_entry
from services.ledger.payout_rules import PAYOUT_ENTRY_RULES, payout_amount
from services.ledger.settlement_run import terms_of

log = structlog.get_logger(__name__)

_AVAILABLE_BALANCES = """
SELECT currency, balance_minor FROM account_balances
WHERE account_id = $1
ORDER BY currency
FOR UPDATE
"""


async def run_payouts(pool: asyncpg.Pool, as_of: date, clock: Clock) -> list[PayoutSummary]:
    """Pay out every merchant's available balances that reach its minimum; returns the
    payouts created now (none for a day already paid out)."""
    created: list[PayoutSummary] = []
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('ledger:payouts'))")
        for row in await connection.fetch("SELECT * FROM merchant_terms ORDER BY merchant_id"):
            merchant_id = row["merchant_id"]
            minimum = terms_of(row).payout_minimum_minor
            balances = await connection.fetch(
                _AVAILABLE_BALANCES, merchant_available_account(merchant_id)
            )
            for balance in balances:
                # Available is credit-normal: what the merchant may be paid is the negation.
                amount = payout_amount(-balance["balance_minor"], minimum)
                if amount is None:
                    continue
                currency = balance["currency"].strip()
                payout = await _create_payout(
                    connection, merchant_id, currency, amount, as_of, clock
                )
                if payout is not None:
                    created.append(payout)
    return created


async def _create_payout(
    connection: Connection,
    merchant_id: str,
    currency: str,
    amount_minor: int,
    as_of: date,
    clock: Clock,
) -> PayoutSummary | None:
    payout_id = payout_id_for(merchant_id, currency, as_of)
    if await connection.fetchval("SELECT true FROM payouts WHERE payout_id = $1", payout_id):
        return None
    payload = PayoutCreatedPayload(
        payout_id=payout_id, currency=currency, amount_minor=amount_minor, payout_date=as_of
    )
    request = BankPayoutRequest(payout_id=payout_id, currency=currency, amount_minor=amount_minor)
    (event,) = await record_decision(
        connection,
        Decision(
            events=(Emit(PayoutCreated, payload),),
            commands=(Send(SubmitBankPayout, request, aggregate_id=payout_id),),
        ),
        stream_id=payout_id,
        expected_version=0,
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=payout_id,
    )
    await _post_payout_entry(connection, event, clock)
    await connection.execute(
        "INSERT INTO payouts (payout_id, merchant_id, currency, amount_minor, payout_date,"
        " status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        payout_id,
        merchant_id,
        currency,
        amount_minor,
        as_of,
        PayoutStatus.IN_TRANSIT.value,
        event.occurred_at,
    )
    log.info("payout_created", payout_id=payout_id, amount_minor=amount_minor)
    return PayoutSummary(
        payout_id=payout_id,
        merchant_id=merchant_id,
        currency=currency,
        amount_minor=amount_minor,
        payout_date=as_of,
    )


async def record_payout_result(
    connection: asyncpg.Connection, result: BankPayoutPaid | BankPayoutFailed, *, clock: Clock
) -> None:
    """Close a payout in transit as paid or failed, once. A repeated result changes
    nothing; a contradicting one (paid, then failed) is logged as an error and changes
    nothing: a bank return after payment is a new fact, not a correction of this one."""
    payout_id = result.payload.payout_id
    row = await connection.fetchrow(
        "SELECT * FROM payouts WHERE payout_id = $1 FOR UPDATE", payout_id
    )
    if row is None:
        log.error("payout_result_unknown_payout", payout_id=payout_id)
        return
    outcome = PayoutStatus.PAID if isinstance(result, BankPayoutPaid) else PayoutStatus.FAILED
    if row["status"] != PayoutStatus.IN_TRANSIT.value:
        if row["status"] == outcome.value:
            log.info("payout_result_repeated", payout_id=payout_id, status=outcome.value)
        else:
            log.error(
                "payout_result_conflict", payout_id=payout_id, status=row["status"], result=outcome
            )
        return
    merchant_id, currency, amount = row["merchant_id"], row["currency"].strip(), row["amount_minor"]
    if isinstance(result, BankPayoutPaid):
        decision = Decision(
            events=(
                Emit(
                    PayoutPaid,
                    PayoutPaidPayload(
                        payout_id=payout_id,
                        currency=currency,
                        amount_minor=amount,
                        bank_reference=result.payload.bank_reference,
                    ),
                ),
            )
        )
        bank_reference, failure = result.payload.bank_reference, None
    else:
        failure_value: Failure = result.payload.failure
        decision = Decision(
            events=(
                Emit(
                    PayoutFailed,
                    PayoutFailedPayload(
                        payout_id=payout_id,
                        currency=currency,
                        amount_minor=amount,
                        failure=failure_value,
                    ),
                ),
            )
        )
        bank_reference, failure = None, failure_value.model_dump_json()
    (event,) = await record_decision(
        connection,
        decision,
        stream_id=payout_id,
        expected_version=await stream_version(connection, payout_id),
        merchant_id=merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=result,
    )
    await _post_payout_entry(connection, event, clock)
    await connection.execute(
        "UPDATE payouts SET status = $2, bank_reference = $3, failure = $4::text::jsonb,"
        " updated_at = $5 WHERE payout_id = $1",
        payout_id,
        outcome.value,
        bank_reference,
        failure,
        event.occurred_at,
    )
    log.info("payout_closed", payout_id=payout_id, status=outcome.value)


async def _post_payout_entry(connection: Connection, event: Event, clock: Clock) -> None:
    kind, postings_of = PAYOUT_ENTRY_RULES[type(event)]
    await post_entry(connection, event, kind, postings_of(event), clock=clock)
