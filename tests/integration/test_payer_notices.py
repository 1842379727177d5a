"""Payer notices against a real PostgreSQL (and, through the notifier process, a real
broker): a payment with a named payer gets one confirmation and its refund one notice,
even when the events are redelivered and the sender fails at first; a payment without a
payer gets none; a sender that keeps failing exhausts the schedule and the notice is
marked failed with the reason; a claimed notice is not sent twice while its lease runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from faststream.kafka import KafkaBroker

from schemas import Topic, encode, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import (
    Payer,
    PaymentCreated,
    PaymentRequest,
    PaymentSucceeded,
    PaymentSucceededPayload,
)
from schemas.refunds import RefundInitiator, RefundSucceeded, RefundSucceededPayload
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.notifier.app import create_app
from services.notifier.payer_notices import (
    NoticeKind,
    PayerNotice,
    queue_payer_notice,
    remember_payer,
    send_due_notices,
)
from services.notifier.settings import NotifierSettings
from tests.support.notice_senders import FLAKY

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


class Payment:
    """The events of one payment: created (with or without a payer), paid, refunded."""

    def __init__(self, merchant_id: str, payer_id: str | None, at: datetime) -> None:
        self.merchant_id = merchant_id
        self.payment_id = f"pay_{uuid.uuid4().hex}"
        self.order_id = f"order-{uuid.uuid4().hex[:8]}"
        self.payer_id = payer_id
        self.at = at

    def _common(self, version: int) -> dict[str, Any]:
        return {
            "aggregate_id": self.payment_id,
            "aggregate_version": version,
            "merchant_id": self.merchant_id,
            "producer": "payment_center",
            "occurred_at": self.at,
            "correlation_id": f"corr-{self.payment_id}",
            "causation_id": None,
        }

    def _terms(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "amount_minor": 8_800,
            "currency": "CNY",
            "channel": Channel.ALIPAY,
            "fee_plan": FeePlan(basis_points=60, fixed_minor=0),
        }

    def created(self) -> PaymentCreated:
        payer = Payer(id=self.payer_id, ip="203.0.113.7") if self.payer_id else None
        request = PaymentRequest(**self._terms(), payer=payer)
        return new_event(PaymentCreated, request, **self._common(1))

    def succeeded(self) -> PaymentSucceeded:
        payload = PaymentSucceededPayload(
            **self._terms(), channel_trade_id=f"trade-{self.payment_id[-8:]}", paid_at=self.at
        )
        return new_event(PaymentSucceeded, payload, **self._common(3))

    def refunded(self, amount_minor: int = 3_000) -> RefundSucceeded:
        payload = RefundSucceededPayload(
            refund_id=f"re_{uuid.uuid4().hex}",
            amount_minor=amount_minor,
            currency="CNY",
            channel=Channel.ALIPAY,
            reason="damaged",
            initiator=RefundInitiator.MERCHANT,
            order_id=self.order_id,
            channel_refund_id="cre-1",
            succeeded_at=self.at,
        )
        return new_event(RefundSucceeded, payload, **self._common(5))


@pytest.fixture
def pool(notifier_pool: asyncpg.Pool) -> asyncpg.Pool:
    return notifier_pool


@pytest.fixture
async def publisher(settings: ServiceSettings) -> AsyncIterator[KafkaBroker]:
    broker = build_broker(settings, client_id="payer-notice-test-publisher")
    await broker.connect()
    yield broker
    await broker.stop()


class Recorder:
    """A sender that fails while `failing` is set, and keeps what it sent."""

    def __init__(self, *, failing: bool = False, hold: asyncio.Event | None = None) -> None:
        self.failing = failing
        self.hold = hold
        self.sent: list[PayerNotice] = []
        self.calls = 0
        self.two_called = asyncio.Event()

    async def send(self, notice: PayerNotice) -> None:
        self.calls += 1
        if self.calls == 2:
            self.two_called.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.failing:
            raise RuntimeError("mailbox full")
        self.sent.append(notice)


async def queue(pool: asyncpg.Pool, clock: FixedClock, *events: Any) -> list[bool]:
    queued = []
    async with pool.acquire() as connection, connection.transaction():
        for event in events:
            if isinstance(event, PaymentCreated):
                await remember_payer(connection, event)
            else:
                queued.append(await queue_payer_notice(connection, event, clock=clock))
    return queued


async def only_notice(pool: asyncpg.Pool) -> asyncpg.Record:
    rows = await pool.fetch("SELECT * FROM payer_notices")
    assert len(rows) == 1, rows
    return rows[0]


async def test_the_notifier_confirms_payments_and_refunds_to_their_payers_once(
    settings: ServiceSettings, publisher: KafkaBroker
) -> None:
    notifier_settings = NotifierSettings(
        **settings.model_dump(),
        payer_notice_sender="tests.support.notice_senders:FLAKY",
        payer_notice_retry_schedule_ms=[0, 100, 100],
        payer_notice_poll_interval_ms=20,
    )
    merchant_id = f"mch_{uuid.uuid4().hex[:8]}"
    named = Payment(merchant_id, "payer-ann", datetime.now(UTC))
    anonymous = Payment(merchant_id, None, datetime.now(UTC))
    paid, refunded = named.succeeded(), named.refunded()
    # Each payment's events share its key, so they arrive in order; the redelivered
    # copies must not make a second notice.
    records = [
        named.created(),
        paid,
        paid,
        refunded,
        refunded,
        anonymous.created(),
        anonymous.succeeded(),
    ]
    app = create_app(notifier_settings)
    topic = topic_name(Topic.PAYMENTS_EVENTS, notifier_settings.kafka_topic_prefix)
    async with app.router.lifespan_context(app):
        for record in records:
            await publisher.publish(encode(record), topic=topic, key=record.aggregate_id.encode())
        pool = app.state.context.pool
        deadline = time.monotonic() + DEADLINE_S
        while True:
            settled = await pool.fetch(
                "SELECT * FROM payer_notices WHERE merchant_id = $1 ORDER BY kind", merchant_id
            )
            # The anonymous payment's webhook event was stored: its notice would be too.
            events_seen = await pool.fetchval(
                "SELECT count(*) FROM webhook_events WHERE merchant_id = $1", merchant_id
            )
            if (
                len(settled) == 2
                and events_seen == 3
                and all(row["status"] == "sent" for row in settled)
            ):
                break
            assert time.monotonic() < deadline, f"notices not sent: {settled!r}"
            await asyncio.sleep(0.05)

    mine = [notice for notice in FLAKY.sent if notice.merchant_id == merchant_id]
    assert sorted(notice.kind for notice in mine) == [
        NoticeKind.PAYMENT_CONFIRMATION,
        NoticeKind.REFUND_NOTICE,
    ]
    assert {notice.payer_id for notice in mine} == {"payer-ann"}
    assert {notice.payment_id for notice in mine} == {named.payment_id}
    confirmation = next(n for n in mine if n.kind is NoticeKind.PAYMENT_CONFIRMATION)
    assert confirmation.text == (
        f"Your payment of 88.00 CNY for order {named.order_id} to merchant {merchant_id} succeeded."
    )
    refund = next(n for n in mine if n.kind is NoticeKind.REFUND_NOTICE)
    assert (refund.amount_minor, refund.refund_id) == (3_000, refunded.payload.refund_id)
    # The first attempt at each failed; the second sent it, and both were counted.
    assert [FLAKY.attempts[n.notice_id] for n in mine] == [2, 2]
    assert [row["attempt_count"] for row in settled] == [2, 2]
    # A sent notice still tells what went wrong on the way.
    assert all(row["last_error"] == "ConnectionError: SMS gateway is down" for row in settled)
    assert {row["event_id"] for row in settled} == {paid.event_id, refunded.event_id}


async def test_a_payment_without_a_payer_owes_no_notice(pool: asyncpg.Pool) -> None:
    clock = FixedClock(T0)
    payment = Payment("mch_1", None, T0)

    assert await queue(pool, clock, payment.created(), payment.succeeded()) == [False]
    assert await pool.fetchval("SELECT count(*) FROM payer_notices") == 0
    assert await pool.fetchval("SELECT count(*) FROM payment_payers") == 0


async def test_a_payer_is_only_known_to_the_merchant_that_named_it(pool: asyncpg.Pool) -> None:
    clock = FixedClock(T0)
    payment = Payment("mch_1", "payer-ann", T0)
    await queue(pool, clock, payment.created())
    stranger = Payment("mch_2", None, T0)
    stranger.payment_id = payment.payment_id

    assert await queue(pool, clock, stranger.succeeded()) == [False]


async def test_a_notice_is_retried_on_the_schedule_then_marked_failed(
    pool: asyncpg.Pool,
) -> None:
    clock = FixedClock(T0)
    payment = Payment("mch_1", "payer-bo", T0)
    assert await queue(pool, clock, payment.created(), payment.succeeded()) == [True]
    sender = Recorder(failing=True)
    schedule = [0, 60_000, 600_000]

    async def send() -> int:
        return await send_due_notices(
            pool, sender, clock=clock, schedule=schedule, timeout_ms=1_000, batch_size=10
        )

    assert await send() == 1
    assert await send() == 0, "the next attempt waits a minute"
    clock.advance(timedelta(seconds=59))
    assert await send() == 0
    clock.advance(timedelta(seconds=1))
    assert await send() == 1
    clock.advance(timedelta(minutes=10))
    assert await send() == 1
    clock.advance(timedelta(days=1))
    assert await send() == 0, "three attempts were all the schedule allows"

    row = await only_notice(pool)
    assert (row["status"], row["attempt_count"]) == ("failed", 3)
    assert row["next_attempt_at"] is None and row["sent_at"] is None
    assert row["last_error"] == "RuntimeError: mailbox full"
    assert sender.calls == 3 and sender.sent == []


async def test_a_sender_that_hangs_is_cut_off_by_the_timeout_and_retried(
    pool: asyncpg.Pool,
) -> None:
    clock = FixedClock(T0)
    payment = Payment("mch_1", "payer-cy", T0)
    await queue(pool, clock, payment.created(), payment.succeeded())
    hanging = Recorder(hold=asyncio.Event())

    claimed = await send_due_notices(
        pool, hanging, clock=clock, schedule=[0, 1_000], timeout_ms=50, batch_size=10
    )

    assert claimed == 1
    row = await only_notice(pool)
    assert (row["status"], row["attempt_count"]) == ("pending", 1)
    assert row["last_error"] == "no answer within 0.05 s"
    assert row["next_attempt_at"] == T0 + timedelta(seconds=1)


async def test_a_claimed_notice_is_not_sent_twice_while_its_lease_runs(
    pool: asyncpg.Pool,
) -> None:
    clock = FixedClock(T0)
    payment = Payment("mch_1", "payer-di", T0)
    await queue(pool, clock, payment.created(), payment.succeeded(), payment.refunded())
    release = asyncio.Event()
    slow, other = Recorder(hold=release), Recorder()

    first = asyncio.create_task(
        send_due_notices(pool, slow, clock=clock, schedule=[0], timeout_ms=5_000, batch_size=10)
    )
    await asyncio.wait_for(slow.two_called.wait(), timeout=DEADLINE_S)
    second = await send_due_notices(
        pool, other, clock=clock, schedule=[0], timeout_ms=5_000, batch_size=10
    )
    release.set()

    assert await first == 2
    assert second == 0 and other.calls == 0
    assert sorted(n.kind for n in slow.sent) == [
        NoticeKind.PAYMENT_CONFIRMATION,
        NoticeKind.REFUND_NOTICE,
    ]
    statuses = await pool.fetch("SELECT status, sent_at FROM payer_notices")
    assert [(row["status"], row["sent_at"]) for row in statuses] == [("sent", T0), ("sent", T0)]


async def test_one_event_queues_one_notice(pool: asyncpg.Pool) -> None:
    clock = FixedClock(T0)
    payment = Payment("mch_1", "payer-ed", T0)
    paid = payment.succeeded()

    assert await queue(pool, clock, payment.created(), paid, paid) == [True, False]
    assert await pool.fetchval("SELECT count(*) FROM payer_notices") == 1
