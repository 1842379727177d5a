"""What the connector owes the channels and the bank rail, kept in `channel_operations`
until a definite answer is recorded.

A channel command from the bus becomes an operation row in the consumer's transaction
(`enqueue_operation`); a lane of the operation's rail claims it, calls the rail outside
any transaction, and records the answer in one transaction with the row's new state
(`services/gateway/connector/lanes.py`). Each kind of operation is three steps:

- `settled`: is the answer recorded already (a redelivered command)? Then nothing is
  called.
- `call`: the rail call, no database. Returns an `Answer` (what the rail said, a refusal
  included) or raises ChannelUnavailable when the outcome is unknown: then the operation
  stays open and is called again, under the same idempotency key (payment, refund or
  payout id), on its schedule.
- `record`: writes what the answer means, the same way whichever call or callback
  brought it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from schemas import Command, Topic, decode
from schemas.channels import (
    ChannelPaymentPrepared,
    ChannelPaymentPreparedPayload,
    ChannelPaymentRejected,
    ChannelPaymentRejectedPayload,
    ChannelPaymentSucceeded,
    CloseChannelTrade,
    QueryChannelPayment,
    SubmitChannelPayment,
)
from schemas.common import Channel, Failure, NextAction
from schemas.operations import (
    PLATFORM_MERCHANT_ID,
    ChannelOperationUnresolved,
    ChannelOperationUnresolvedPayload,
)
from schemas.payouts import SubmitBankPayout
from schemas.refunds import (
    ChannelRefundAccepted,
    ChannelRefundAcceptedPayload,
    QueryChannelRefund,
    SubmitChannelRefund,
)
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision, stream_version
from services.common.invariant import InvariantViolation
from services.gateway.channel_results import (
    CHANNEL_UNAVAILABLE,
    claim_notification,
    record_channel_notification,
    record_channel_result,
    record_paid_trade,
    record_refund_failure,
    refund_recorded,
    succeeded_payload,
)
from services.gateway.channels.bank import BankRailClient
from services.gateway.channels.base import (
    ChannelAdapter,
    ChannelRejected,
    PreparedTrade,
    RefundAccepted,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)
from services.gateway.payouts import record_payout_result, record_payout_sent

log = structlog.get_logger(__name__)

BANK_RAIL = "bank"
TRADE_ALREADY_PAID = "trade_already_paid"


@dataclass(frozen=True)
class Rails:
    """The adapters the lanes call: one per payment channel, and the bank rail."""

    channels: Mapping[Channel, ChannelAdapter]
    bank: BankRailClient | None
    clock: Clock


@dataclass(frozen=True)
class Answer:
    """A definite answer of the rail: `result` is what the call returned, or the
    ChannelRejected it raised (a refusal is an answer too)."""

    result: Any


Settled = Callable[[Connection, Any], Awaitable[bool]]
Call = Callable[[Any, Rails], Awaitable[Answer]]
Record = Callable[[Connection, Any, Answer, Rails], Awaitable[None]]


@dataclass(frozen=True)
class OperationKind:
    name: str
    command_type: type[Command]
    settled: Settled
    call: Call
    record: Record
    # Whether a new operation (never sent) is refused while its rail's circuit is open.
    # Only a new payment is: the payer can be routed elsewhere or try again. A refund, a
    # payout or a query is owed and waits for the rail instead.
    refused_while_failing: bool


def rail_of(command: Command) -> str:
    if isinstance(command, SubmitBankPayout):
        return BANK_RAIL
    return str(command.payload.channel.value)  # type: ignore[attr-defined]


def subject_of(command: Command) -> str:
    if isinstance(command, SubmitChannelRefund | QueryChannelRefund):
        return command.payload.refund_id
    if isinstance(command, SubmitBankPayout):
        return command.payload.payout_id
    return command.aggregate_id


def _adapter(rails: Rails, command: Any) -> ChannelAdapter | None:
    return rails.channels.get(command.payload.channel)


async def _answered(call: Awaitable[Any]) -> Answer:
    """The rail's answer to `call`, its refusal included; ChannelUnavailable passes."""
    try:
        return Answer(await call)
    except ChannelRejected as refusal:
        return Answer(refusal)


async def _never_settled(_connection: Connection, _command: Any) -> bool:
    return False


# Submit a payment: create the channel's trade, or (cards) authorise and capture at once.


async def _payment_settled(connection: Connection, command: SubmitChannelPayment) -> bool:
    return await stream_version(connection, command.aggregate_id) > 0


async def _call_submit_payment(command: SubmitChannelPayment, rails: Rails) -> Answer:
    adapter = _adapter(rails, command)
    if adapter is None:
        return Answer(
            ChannelRejected("unsupported", f"channel {command.payload.channel.value} is off")
        )
    request = command.payload
    return await _answered(
        adapter.prepare(
            payment_id=command.aggregate_id,
            amount_minor=request.amount_minor,
            currency=request.currency,
            description=request.description or request.order_id,
        )
    )


async def _record_submit_payment(
    connection: Connection, command: SubmitChannelPayment, answer: Answer, rails: Rails
) -> None:
    if await _payment_settled(connection, command):
        return
    channel = command.payload.channel
    result = answer.result
    if isinstance(result, ChannelRejected):
        code = (
            CHANNEL_UNAVAILABLE if result.code == CHANNEL_UNAVAILABLE else f"channel_{result.code}"
        )
        await record_channel_result(
            connection,
            ChannelPaymentRejected,
            ChannelPaymentRejectedPayload(
                channel=channel, failure=Failure(code=code[:64], message=result.message)
            ),
            command=command,
            clock=rails.clock,
        )
    elif isinstance(result, VerifiedPaymentNotification):
        await claim_notification(connection, channel, result.notification_id, command.aggregate_id)
        await record_channel_result(
            connection,
            ChannelPaymentSucceeded,
            succeeded_payload(channel, result),
            command=command,
            clock=rails.clock,
        )
    elif isinstance(result, PreparedTrade):
        await record_channel_result(
            connection,
            ChannelPaymentPrepared,
            ChannelPaymentPreparedPayload(
                channel=channel,
                channel_trade_id=result.channel_trade_id,
                next_action=NextAction(url=result.pay_url, qr_code=result.qr_code),
            ),
            command=command,
            clock=rails.clock,
        )
    else:
        raise InvariantViolation(f"unexpected prepare answer {type(result).__name__}")


# Close the trade of a canceled or expired payment; a trade the payer paid meanwhile is
# recorded as paid (payment_center then refunds it as a late payment).


async def _call_close(command: CloseChannelTrade, rails: Rails) -> Answer:
    adapter = _adapter(rails, command)
    if adapter is None:
        return Answer(None)
    try:
        await adapter.close(payment_id=command.aggregate_id)
    except ChannelRejected as refusal:
        if refusal.code != TRADE_ALREADY_PAID:
            return Answer(refusal)
        # The payer paid before the close: the proof is a query away, and it must not
        # wait for a notification that may never come.
        return Answer(await adapter.query(payment_id=command.aggregate_id))
    return Answer(None)


async def _record_found_payment(
    connection: Connection,
    command: CloseChannelTrade | QueryChannelPayment,
    answer: Answer,
    rails: Rails,
) -> None:
    result = answer.result
    if isinstance(result, ChannelRejected):
        log.warning("channel_trade_not_closed", payment_id=command.aggregate_id, code=result.code)
        return
    if isinstance(result, VerifiedPaymentNotification):
        recorded = await record_paid_trade(
            connection, command.payload.channel, result, command=command, clock=rails.clock
        )
        log.info("channel_trade_found_paid", payment_id=command.aggregate_id, recorded=recorded)


async def _call_query_payment(command: QueryChannelPayment, rails: Rails) -> Answer:
    adapter = _adapter(rails, command)
    if adapter is None:
        return Answer(None)
    return Answer(await adapter.query(payment_id=command.aggregate_id))


# Refunds: the refund id is the channel's idempotency key.


async def _refund_settled(connection: Connection, command: SubmitChannelRefund) -> bool:
    return await refund_recorded(connection, command.aggregate_id, command.payload.refund_id)


async def _call_submit_refund(command: SubmitChannelRefund, rails: Rails) -> Answer:
    adapter = _adapter(rails, command)
    if adapter is None:
        return Answer(
            ChannelRejected("unsupported", f"channel {command.payload.channel.value} is off")
        )
    request = command.payload
    return await _answered(
        adapter.refund(
            payment_id=command.aggregate_id,
            refund_id=request.refund_id,
            amount_minor=request.amount_minor,
            currency=request.currency,
            reason=request.reason,
        )
    )


async def _record_submit_refund(
    connection: Connection, command: SubmitChannelRefund, answer: Answer, rails: Rails
) -> None:
    if await _refund_settled(connection, command):
        return
    result = answer.result
    if isinstance(result, ChannelRejected):
        failure = Failure(code=f"channel_{result.code}"[:64], message=result.message)
        await record_refund_failure(connection, command, failure, rails.clock)
        return
    if not isinstance(result, RefundAccepted):
        raise InvariantViolation(f"unexpected refund answer {type(result).__name__}")
    await record_channel_result(
        connection,
        ChannelRefundAccepted,
        ChannelRefundAcceptedPayload(
            refund_id=command.payload.refund_id,
            channel=command.payload.channel,
            channel_refund_id=result.channel_refund_id,
        ),
        command=command,
        clock=rails.clock,
    )


async def _call_query_refund(command: QueryChannelRefund, rails: Rails) -> Answer:
    adapter = _adapter(rails, command)
    if adapter is None:
        return Answer(None)
    return Answer(
        await adapter.query_refund(
            payment_id=command.aggregate_id, refund_id=command.payload.refund_id
        )
    )


async def _record_query_refund(
    connection: Connection, command: QueryChannelRefund, answer: Answer, rails: Rails
) -> None:
    result = answer.result
    if isinstance(result, VerifiedRefundNotification):
        await record_channel_notification(
            connection, command.payload.channel, result, clock=rails.clock
        )


# Payouts: the payout id is the bank's idempotency key.


async def _payout_settled(connection: Connection, command: SubmitBankPayout) -> bool:
    payout_id = command.payload.payout_id
    if await stream_version(connection, payout_id) > 0:
        return True
    sent = await connection.fetchval(
        "SELECT true FROM bank_payouts WHERE payout_id = $1", payout_id
    )
    return bool(sent)


async def _call_submit_payout(command: SubmitBankPayout, rails: Rails) -> Answer:
    if rails.bank is None:
        return Answer(ChannelRejected("unsupported", "no bank rail is configured"))
    request = command.payload
    return await _answered(
        rails.bank.send_payout(
            payout_id=request.payout_id,
            amount_minor=request.amount_minor,
            currency=request.currency,
            beneficiary=command.merchant_id,
        )
    )


async def _record_submit_payout(
    connection: Connection, command: SubmitBankPayout, answer: Answer, rails: Rails
) -> None:
    if await _payout_settled(connection, command):
        return
    result = answer.result
    if isinstance(result, ChannelRejected):
        await record_payout_result(
            connection,
            command.merchant_id,
            command.payload.payout_id,
            failure=Failure(code=f"bank_{result.code}"[:64], message=result.message or result.code),
            bank_reference=None,
            clock=rails.clock,
            cause=command,
        )
        return
    await record_payout_sent(connection, command, str(result), clock=rails.clock)


OPERATION_KINDS: dict[type[Command], OperationKind] = {
    kind.command_type: kind
    for kind in (
        OperationKind(
            "submit_payment",
            SubmitChannelPayment,
            _payment_settled,
            _call_submit_payment,
            _record_submit_payment,
            refused_while_failing=True,
        ),
        OperationKind(
            "close_trade",
            CloseChannelTrade,
            _never_settled,
            _call_close,
            _record_found_payment,
            refused_while_failing=False,
        ),
        OperationKind(
            "query_payment",
            QueryChannelPayment,
            _never_settled,
            _call_query_payment,
            _record_found_payment,
            refused_while_failing=False,
        ),
        OperationKind(
            "submit_refund",
            SubmitChannelRefund,
            _refund_settled,
            _call_submit_refund,
            _record_submit_refund,
            refused_while_failing=False,
        ),
        OperationKind(
            "query_refund",
            QueryChannelRefund,
            _never_settled,
            _call_query_refund,
            _record_query_refund,
            refused_while_failing=False,
        ),
        OperationKind(
            "submit_payout",
            SubmitBankPayout,
            _payout_settled,
            _call_submit_payout,
            _record_submit_payout,
            refused_while_failing=False,
        ),
    )
}
KIND_BY_NAME = {kind.name: kind for kind in OPERATION_KINDS.values()}


@dataclass(frozen=True)
class Operation:
    """One claimed row of `channel_operations`."""

    kind: OperationKind
    subject_id: str
    rail: str
    command: Command
    # Calls made before this one; above zero the rail may have carried out the work.
    attempts_before: int
    first_attempt_at: datetime


# A command queued again after its operation finished opens it again: a later query or
# close of the same payment is new work. A command whose operation is still open changes
# nothing (a redelivery).
_ENQUEUE = """
INSERT INTO channel_operations (kind, subject_id, rail, payment_id, command_topic,
                                command_body, next_attempt_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
ON CONFLICT (kind, subject_id) DO UPDATE
SET status = 'pending', attempts = 0, next_attempt_at = EXCLUDED.next_attempt_at,
    command_topic = EXCLUDED.command_topic, command_body = EXCLUDED.command_body,
    first_attempt_at = NULL, finished_at = NULL, last_error = NULL, alerted_at = NULL
WHERE channel_operations.status = 'done'
  AND channel_operations.kind IN ('close_trade', 'query_payment', 'query_refund')
"""


async def enqueue_operation(
    connection: Connection, command: Command, *, clock: Clock, topic: Topic
) -> None:
    """Queue the rail call `command` asks for (the consumer's handler for channel commands)."""
    kind = OPERATION_KINDS[type(command)]
    await connection.execute(
        _ENQUEUE,
        kind.name,
        subject_of(command),
        rail_of(command),
        command.aggregate_id,
        topic.value,
        command.model_dump_json(),
        clock.now(),
    )
    if kind.name == "close_trade":
        # A payment being closed needs no further attempt to open its trade: the close
        # (and, if the payer paid meanwhile, its query) decides what happened.
        await connection.execute(
            "UPDATE channel_operations SET status = 'done', finished_at = $2,"
            " last_error = 'superseded by close_trade'"
            " WHERE kind = 'submit_payment' AND subject_id = $1 AND status <> 'done'",
            command.aggregate_id,
            clock.now(),
        )


_CLAIM = """
UPDATE channel_operations AS operation
SET leased_until = $3, attempts = operation.attempts + 1,
    first_attempt_at = coalesce(operation.first_attempt_at, $2)
FROM (SELECT kind, subject_id FROM channel_operations
      WHERE rail = $1 AND status <> 'done' AND next_attempt_at <= $2
        AND (leased_until IS NULL OR leased_until < $2)
      ORDER BY next_attempt_at
      LIMIT $4
      FOR UPDATE SKIP LOCKED) AS due
WHERE operation.kind = due.kind AND operation.subject_id = due.subject_id
RETURNING operation.kind, operation.subject_id, operation.rail, operation.command_topic,
          operation.command_body, operation.attempts, operation.first_attempt_at
"""


async def claim_due(
    pool: asyncpg.Pool, rail: str, *, now: datetime, lease_until: datetime, limit: int
) -> list[Operation]:
    """Lease up to `limit` due operations of `rail` and count the call about to be made,
    committed before the call, so a crash during it still counts it as made."""
    rows = await pool.fetch(_CLAIM, rail, now, lease_until, limit)
    return [
        Operation(
            kind=KIND_BY_NAME[row["kind"]],
            subject_id=row["subject_id"],
            rail=row["rail"],
            command=_command(row["command_topic"], row["command_body"]),
            attempts_before=row["attempts"] - 1,
            first_attempt_at=row["first_attempt_at"],
        )
        for row in rows
    ]


def _command(topic: str, body: str) -> Command:
    message = decode(Topic(topic), body.encode())
    if not isinstance(message, Command):
        raise InvariantViolation(f"a channel operation holds {message.message_type}")
    return message


async def next_due_at(pool: asyncpg.Pool, rail: str) -> datetime | None:
    """When the earliest open operation of `rail` is due (None when there is none)."""
    due: datetime | None = await pool.fetchval(
        "SELECT min(greatest(next_attempt_at, coalesce(leased_until, next_attempt_at)))"
        " FROM channel_operations WHERE rail = $1 AND status <> 'done'",
        rail,
    )
    return due


async def finish(connection: Connection, operation: Operation, now: datetime) -> None:
    await connection.execute(
        "UPDATE channel_operations SET status = 'done', finished_at = $3, leased_until = NULL"
        " WHERE kind = $1 AND subject_id = $2",
        operation.kind.name,
        operation.subject_id,
        now,
    )


async def reschedule(
    connection: Connection | asyncpg.Pool,
    operation: Operation,
    *,
    at: datetime,
    error: str,
    unknown: bool,
    uncount_attempt: bool = False,
) -> None:
    """Leave the operation open until `at`. `unknown`: the call may have reached the
    rail; `uncount_attempt`: no call was made after all (the circuit was open)."""
    await connection.execute(
        "UPDATE channel_operations SET next_attempt_at = $3, leased_until = NULL,"
        " last_error = $4,"
        " status = CASE WHEN $5 THEN 'unknown' ELSE status END,"
        " attempts = attempts - CASE WHEN $6 THEN 1 ELSE 0 END,"
        " first_attempt_at = CASE WHEN $6 AND attempts = 1 THEN NULL ELSE first_attempt_at END"
        " WHERE kind = $1 AND subject_id = $2",
        operation.kind.name,
        operation.subject_id,
        at,
        error[:1000],
        unknown,
        uncount_attempt,
    )


async def alert_unresolved(
    connection: Connection, rail: str, *, unknown_since: datetime, clock: Clock
) -> list[ChannelOperationUnresolvedPayload]:
    """Mark the open operations of `rail` whose first call is older than `unknown_since`
    and that were not alerted yet, and record `ChannelOperationUnresolved` for each (for
    the ops webhook), in the caller's transaction. Returns what was alerted."""
    rows = await connection.fetch(
        "UPDATE channel_operations SET alerted_at = $3"
        " WHERE rail = $1 AND status <> 'done' AND alerted_at IS NULL"
        " AND first_attempt_at < $2"
        " RETURNING kind, subject_id, attempts, first_attempt_at, last_error,"
        " command_body::jsonb ->> 'correlation_id' AS correlation_id",
        rail,
        unknown_since,
        clock.now(),
    )
    alerted: list[ChannelOperationUnresolvedPayload] = []
    for row in rows:
        payload = ChannelOperationUnresolvedPayload(
            kind=row["kind"],
            subject_id=row["subject_id"],
            rail=rail,
            attempts=row["attempts"],
            first_attempt_at=row["first_attempt_at"],
            last_error=(row["last_error"] or "")[:1000],
        )
        name = f"payrail:unresolved:{row['kind']}:{row['subject_id']}:{row['first_attempt_at']}"
        await record_decision(
            connection,
            Decision(events=(Emit(ChannelOperationUnresolved, payload),)),
            stream_id=f"unresolved_{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}",
            expected_version=0,
            merchant_id=PLATFORM_MERCHANT_ID,
            producer="connector",
            clock=clock,
            cause=None,
            correlation_id=row["correlation_id"],
        )
        alerted.append(payload)
    return alerted
