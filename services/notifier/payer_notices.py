"""Payer notices: a payment confirmation when a payment succeeds and a refund notice when
money goes back, sent through a pluggable sender (the default one writes to the log).

A notice is for the payer the merchant named when it created the payment
(`payer.id`); a payment without one gets no notice. The notifier remembers each
payment's payer from `PaymentCreated`, and queues a notice in the consumer's inbox
transaction when `PaymentSucceeded` or `RefundSucceeded` arrives, so a notice is queued
exactly once per event. A worker sends due notices at least once, retrying on the
configured schedule; `notice_id` lets a sender drop a repeat.

The sender is named by `PAYRAIL_PAYER_NOTICE_SENDER` as `module:attribute`, an object
with `async send(notice)` or a class (or factory) called without arguments to make one.
It resolves `payer_id` to an address (SMS, e-mail, app push) on its own side: payrail
keeps no payer contact details.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

import asyncpg
import structlog
from prometheus_client import Counter

from schemas.money import format_amount
from schemas.payments import PaymentCreated, PaymentSucceeded
from schemas.refunds import RefundSucceeded
from services.common.clock import Clock
from services.common.db import Connection
from services.common.errors import TRANSIENT_ERRORS
from services.common.ids import new_prefixed_id
from services.notifier.domain import next_attempt_delay_ms

log = structlog.get_logger(__name__)

DEFAULT_SENDER = "services.notifier.payer_notices:LogNoticeSender"
ERROR_LENGTH_MAX = 500
# A claimed notice stays invisible to other workers for the send timeout plus this.
LEASE_MARGIN_MS = 60_000

PAYER_NOTICES = Counter(
    "payrail_payer_notices_total",
    "Payer notice send attempts, by kind and outcome (sent, retrying, failed: the retry "
    "schedule is exhausted).",
    ["kind", "outcome"],
)


class NoticeKind(StrEnum):
    PAYMENT_CONFIRMATION = "payment_confirmation"
    REFUND_NOTICE = "refund_notice"


class NoticeStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class PayerNotice:
    """One message to one payer. `notice_id` is stable across retries."""

    notice_id: str
    kind: NoticeKind
    merchant_id: str
    payer_id: str
    payment_id: str
    order_id: str
    refund_id: str | None
    amount_minor: int
    currency: str
    occurred_at: datetime

    @property
    def text(self) -> str:
        """The notice in words, e.g. `Your payment of 12.34 CNY for order o_1 to merchant
        m_1 succeeded.`"""
        amount = format_amount(self.amount_minor, self.currency)
        if self.kind is NoticeKind.PAYMENT_CONFIRMATION:
            return (
                f"Your payment of {amount} for order {self.order_id} to merchant "
                f"{self.merchant_id} succeeded."
            )
        return (
            f"{amount} for order {self.order_id} at merchant {self.merchant_id} was "
            f"refunded to you."
        )


NoticeEvent = PaymentSucceeded | RefundSucceeded


def notice_for(event: NoticeEvent, payer_id: str, notice_id: str) -> PayerNotice:
    """The notice `event` owes the payer `payer_id`."""
    if isinstance(event, PaymentSucceeded):
        return PayerNotice(
            notice_id=notice_id,
            kind=NoticeKind.PAYMENT_CONFIRMATION,
            merchant_id=event.merchant_id,
            payer_id=payer_id,
            payment_id=event.aggregate_id,
            order_id=event.payload.order_id,
            refund_id=None,
            amount_minor=event.payload.amount_minor,
            currency=event.payload.currency,
            occurred_at=event.payload.paid_at,
        )
    return PayerNotice(
        notice_id=notice_id,
        kind=NoticeKind.REFUND_NOTICE,
        merchant_id=event.merchant_id,
        payer_id=payer_id,
        payment_id=event.aggregate_id,
        order_id=event.payload.order_id,
        refund_id=event.payload.refund_id,
        amount_minor=event.payload.amount_minor,
        currency=event.payload.currency,
        occurred_at=event.payload.succeeded_at,
    )


# ---------------------------------------------------------------------------------------
# Senders


@runtime_checkable
class PayerNoticeSender(Protocol):
    async def send(self, notice: PayerNotice) -> None:
        """Deliver `notice`; raise to have it retried on the schedule."""


class LogNoticeSender:
    """The default sender: one structured log line per notice."""

    def __init__(self) -> None:
        self._log = structlog.get_logger(__name__)

    async def send(self, notice: PayerNotice) -> None:
        self._log.info(
            "payer_notice",
            notice_id=notice.notice_id,
            kind=notice.kind.value,
            merchant_id=notice.merchant_id,
            payer_id=notice.payer_id,
            payment_id=notice.payment_id,
            refund_id=notice.refund_id,
            text=notice.text,
        )


class InvalidSender(ValueError):
    """The configured sender cannot be imported or is not a sender."""


def load_sender(spec: str) -> PayerNoticeSender:
    """Import the sender named `module:attribute`. The attribute is a sender, or a class or
    function that makes one when called without arguments. Raises InvalidSender."""
    module_name, separator, attribute = spec.partition(":")
    if not separator or not module_name or not attribute:
        raise InvalidSender(f"payer notice sender {spec!r} is not of the form module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InvalidSender(f"payer notice sender module {module_name!r}: {error}") from error
    try:
        target = getattr(module, attribute)
    except AttributeError as error:
        raise InvalidSender(f"{module_name!r} has no {attribute!r}") from error
    sender = target
    if inspect.isclass(target) or inspect.isfunction(target):
        try:
            sender = target()
        except TypeError as error:  # it needs arguments: not a sender's factory
            raise InvalidSender(f"{spec!r} cannot be called without arguments: {error}") from error
    if not isinstance(sender, PayerNoticeSender) or not inspect.iscoroutinefunction(sender.send):
        raise InvalidSender(f"{spec!r} does not give an object with `async send(notice)`")
    return sender


# ---------------------------------------------------------------------------------------
# Queueing (inside the consumer's inbox transaction)


async def remember_payer(connection: Connection, event: PaymentCreated) -> None:
    """Keep who pays for the payment, when the merchant said so."""
    payer = event.payload.payer
    if payer is None or payer.id is None:
        return
    await connection.execute(
        "INSERT INTO payment_payers (payment_id, merchant_id, payer_id, recorded_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (payment_id) DO NOTHING",
        event.aggregate_id,
        event.merchant_id,
        payer.id,
        event.occurred_at,
    )


async def queue_payer_notice(
    connection: Connection, event: NoticeEvent, *, clock: Clock, first_attempt_delay_ms: int = 0
) -> bool:
    """Queue the notice `event` owes its payment's payer; returns whether one was queued
    (not when the payment has no known payer, nor twice for one event)."""
    payer_id = await connection.fetchval(
        "SELECT payer_id FROM payment_payers WHERE payment_id = $1 AND merchant_id = $2",
        event.aggregate_id,
        event.merchant_id,
    )
    if payer_id is None:
        return False
    notice = notice_for(event, payer_id, new_prefixed_id("pn"))
    now = clock.now()
    queued = await connection.fetchval(
        "INSERT INTO payer_notices (notice_id, event_id, kind, merchant_id, payer_id,"
        " payment_id, order_id, refund_id, amount_minor, currency, occurred_at, created_at,"
        " next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        " ON CONFLICT (event_id) DO NOTHING RETURNING true",
        notice.notice_id,
        event.event_id,
        notice.kind.value,
        notice.merchant_id,
        notice.payer_id,
        notice.payment_id,
        notice.order_id,
        notice.refund_id,
        notice.amount_minor,
        notice.currency,
        notice.occurred_at,
        now,
        now + timedelta(milliseconds=first_attempt_delay_ms),
    )
    return bool(queued)


# ---------------------------------------------------------------------------------------
# Sending (the worker)


@dataclass(frozen=True)
class ClaimedNotice:
    notice: PayerNotice
    attempt_count: int  # attempts made before this one


async def _claim_due_notices(
    pool: asyncpg.Pool, now: datetime, *, limit: int, lease: timedelta
) -> list[ClaimedNotice]:
    rows = await pool.fetch(
        "UPDATE payer_notices AS notice SET next_attempt_at = $3"
        " FROM (SELECT notice_id FROM payer_notices WHERE status = 'pending'"
        "  AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2"
        "  FOR UPDATE SKIP LOCKED) AS due"
        " WHERE notice.notice_id = due.notice_id RETURNING notice.*",
        now,
        limit,
        now + lease,
    )
    return [
        ClaimedNotice(
            notice=PayerNotice(
                notice_id=row["notice_id"],
                kind=NoticeKind(row["kind"]),
                merchant_id=row["merchant_id"],
                payer_id=row["payer_id"],
                payment_id=row["payment_id"],
                order_id=row["order_id"],
                refund_id=row["refund_id"],
                amount_minor=row["amount_minor"],
                currency=row["currency"],
                occurred_at=row["occurred_at"],
            ),
            attempt_count=row["attempt_count"],
        )
        for row in rows
    ]


async def _send_one(sender: PayerNoticeSender, notice: PayerNotice, timeout_s: float) -> str | None:
    """Send `notice`; return None on success, else what went wrong."""
    try:
        async with asyncio.timeout(timeout_s):
            await sender.send(notice)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as error:  # a sender's failure of any kind is retried
        return f"{type(error).__name__}: {error}"[:ERROR_LENGTH_MAX]
    return None


async def _record_outcome(
    pool: asyncpg.Pool,
    claimed: ClaimedNotice,
    error: str | None,
    schedule: Sequence[int],
    clock: Clock,
) -> NoticeStatus:
    attempt_count = claimed.attempt_count + 1
    now = clock.now()
    if error is None:
        status, next_attempt_at = NoticeStatus.SENT, None
    else:
        delay_ms = next_attempt_delay_ms(attempt_count, schedule)
        if delay_ms is None:
            status, next_attempt_at = NoticeStatus.FAILED, None
        else:
            status, next_attempt_at = (
                NoticeStatus.PENDING,
                now + timedelta(milliseconds=delay_ms),
            )
    await pool.execute(
        "UPDATE payer_notices SET status = $2::text, attempt_count = $3,"
        " next_attempt_at = $4, last_error = coalesce($5, last_error),"
        " sent_at = CASE WHEN $2::text = 'sent' THEN $6::timestamptz END"
        " WHERE notice_id = $1 AND status = 'pending'",
        claimed.notice.notice_id,
        status.value,
        attempt_count,
        next_attempt_at,
        error,
        now,
    )
    return status


async def send_due_notices(
    pool: asyncpg.Pool,
    sender: PayerNoticeSender,
    *,
    clock: Clock,
    schedule: Sequence[int],
    timeout_ms: int,
    batch_size: int,
) -> int:
    """Send up to `batch_size` due notices at once and record each outcome; returns how
    many were claimed. A worker that dies mid-send leaves its notices to be sent again
    when their lease runs out."""
    lease = timedelta(milliseconds=timeout_ms + LEASE_MARGIN_MS)
    claimed = await _claim_due_notices(pool, clock.now(), limit=batch_size, lease=lease)
    errors = await asyncio.gather(
        *(_send_one(sender, item.notice, timeout_ms / 1000) for item in claimed)
    )
    for item, error in zip(claimed, errors, strict=True):
        status = await _record_outcome(pool, item, error, schedule, clock)
        outcome = "retrying" if status is NoticeStatus.PENDING else status.value
        PAYER_NOTICES.labels(item.notice.kind.value, outcome).inc()
        if error is not None:
            log.warning(
                "payer_notice_failed",
                notice_id=item.notice.notice_id,
                attempt=item.attempt_count + 1,
                final=status is NoticeStatus.FAILED,
                error=error,
            )
    return len(claimed)


async def run_notice_worker(
    pool: asyncpg.Pool,
    sender: PayerNoticeSender,
    *,
    clock: Clock,
    schedule: Sequence[int],
    timeout_ms: int,
    batch_size: int,
    poll_interval_ms: int,
) -> None:
    """Send due notices for the life of the process."""
    while True:
        try:
            claimed = await send_due_notices(
                pool,
                sender,
                clock=clock,
                schedule=schedule,
                timeout_ms=timeout_ms,
                batch_size=batch_size,
            )
        except TRANSIENT_ERRORS as error:
            log.warning("payer_notice_claim_failed", error=repr(error))
            claimed = 0
        if claimed < batch_size:
            await asyncio.sleep(poll_interval_ms / 1000)
