"""Risk's consumer batches lock what they count in one global order, so batches of two
partitions applied side by side never deadlock: a batch holds its locks until it commits,
and without the order a batch that met a channel's payment first and one that met the
merchant's new payment first would each wait for the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from schemas import Message, Topic, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import (
    PaymentCreated,
    PaymentSucceeded,
    PaymentSucceededPayload,
)
from services.common.clock import FixedClock
from services.common.consumer import BatchApplier, RetryPolicy
from services.common.dead_letters import DeadLetterSink
from services.common.metrics import CONSUMER_TRANSIENT_RETRIES
from services.common.settings import ServiceSettings
from services.risk.app import create_app
from services.risk.settings import RiskSettings
from tests.integration.test_risk_service import payment_created

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ROUND_COUNT = 12
GROUP = "risk-lock-order-test"


@dataclass
class FakeRecord:
    """A record as the consumer reads it (the Record protocol), built from a message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


def created(merchant_id: str, minute: int) -> PaymentCreated:
    return payment_created(merchant_id, f"payer-{uuid.uuid4().hex[:8]}", minute)


def succeeded(merchant_id: str, minute: int) -> PaymentSucceeded:
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_event(
        PaymentSucceeded,
        PaymentSucceededPayload(
            order_id=f"order-{uuid.uuid4().hex[:8]}",
            amount_minor=1_000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
            channel_trade_id=f"trade-{uuid.uuid4().hex[:8]}",
            paid_at=NOW + timedelta(minutes=minute),
        ),
        aggregate_id=payment_id,
        aggregate_version=4,
        merchant_id=merchant_id,
        producer="payment_center",
        occurred_at=NOW + timedelta(minutes=minute),
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


def records(topic: str, partition: int, messages: list[Message]) -> list[FakeRecord]:
    return [
        FakeRecord(
            topic=topic,
            partition=partition,
            offset=offset,
            key=message.aggregate_id.encode(),
            value=message.model_dump_json().encode(),
            headers=[("message_type", message.message_type.encode())],
        )
        for offset, message in enumerate(messages)
    ]


async def test_batches_that_meet_a_merchant_and_a_channel_in_opposite_orders_never_deadlock(
    settings: ServiceSettings,
) -> None:
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    app = create_app(RiskSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        context = app.state.context
        pool: asyncpg.Pool = context.pool
        topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
        (subscription,) = [s for s in context.subscriptions if s.topic is Topic.PAYMENTS_EVENTS]
        applier = BatchApplier(
            group=GROUP,
            pool=pool,
            subscriptions={topic: subscription},
            dead_letters=DeadLetterSink(pool, service="risk", clock=context.clock),
            retry=RetryPolicy(retry_count_max=100, backoff_s_initial=0.01, backoff_s_max=0.05),
        )
        retries_before = CONSUMER_TRANSIENT_RETRIES.labels(GROUP)._value.get()
        applied = 0
        for round_index in range(ROUND_COUNT):
            minute = 2 * round_index
            # Partition 0 meets the channel first, partition 1 the merchant first.
            channel_first = [succeeded(merchant, minute), created(merchant, minute)]
            merchant_first = [created(merchant, minute + 1), succeeded(merchant, minute + 1)]
            outcomes = await asyncio.gather(
                applier.apply(records(topic, 0, list(channel_first))),
                applier.apply(records(topic, 1, list(merchant_first))),
            )
            applied += sum(outcome.applied for outcome in outcomes)
            assert all(outcome.dead_lettered == 0 for outcome in outcomes)
        retries = CONSUMER_TRANSIENT_RETRIES.labels(GROUP)._value.get() - retries_before
        assert applied == 4 * ROUND_COUNT
        assert retries == 0, f"{retries} batches were retried (deadlocks)"
        decided = await pool.fetchval(
            "SELECT count(*) FROM payment_observations WHERE merchant_id = $1", merchant
        )
        assert decided == 2 * ROUND_COUNT
