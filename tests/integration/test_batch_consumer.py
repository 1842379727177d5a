"""The batched consumer against a real broker and a real PostgreSQL: batches per partition,
one inbox statement and one transaction per batch, per-key order, isolation of a poisoned
record, and transient database errors retried without dead letters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from faststream.kafka import KafkaBroker

from schemas import Topic, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import PaymentCanceled, PaymentCreated, PaymentRequest
from services.common.broker import DeadLetterPublisher, build_broker
from services.common.clock import SystemClock
from services.common.consumer import (
    BatchApplier,
    PartitionedConsumer,
    RetryPolicy,
    Subscription,
)
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.dead_letters import DeadLetterSink
from services.common.invariant import InvariantViolation
from services.common.settings import ServiceSettings
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

SCHEMA = "consumer_test"
INBOX_NAME = "consumer-test:payments.events"


@pytest.fixture
async def pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(
        settings.database_url, SCHEMA, load_migrations("services.common.migrations")
    )
    pool = await create_pool(settings.database_url, SCHEMA, size_max=12)
    await pool.execute(
        "CREATE TABLE effects (message_id uuid NOT NULL, stream_id text NOT NULL,"
        " version integer NOT NULL, applied_in bigint NOT NULL DEFAULT txid_current(),"
        " seq bigint GENERATED ALWAYS AS IDENTITY)"
    )
    yield pool
    await pool.close()


@pytest.fixture
async def broker(settings: ServiceSettings) -> AsyncIterator[KafkaBroker]:
    broker = build_broker(settings, client_id="consumer-test")
    await broker.connect()
    yield broker
    await broker.stop()


def created(stream_id: str, version: int) -> PaymentCreated:
    return new_event(
        PaymentCreated,
        PaymentRequest(
            order_id=f"order-{uuid.uuid4().hex[:6]}",
            amount_minor=1000 + version,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
        ),
        aggregate_id=stream_id,
        aggregate_version=version,
        merchant_id="mch_test",
        producer="test",
        occurred_at=datetime.now(UTC),
        correlation_id=f"corr-{stream_id}",
        causation_id=None,
    )


async def record_effect(connection: asyncpg.Connection, event: PaymentCreated) -> None:
    await connection.execute(
        "INSERT INTO effects (message_id, stream_id, version) VALUES ($1, $2, $3)",
        event.event_id,
        event.aggregate_id,
        event.aggregate_version,
    )


class RunningConsumer:
    def __init__(self, consumer: PartitionedConsumer) -> None:
        self.consumer = consumer
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningConsumer:
        await self.consumer.start()
        self.task = asyncio.create_task(self.consumer.run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


def running_consumer(
    settings: ServiceSettings,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    subscription: Subscription,
    *,
    group_id: str,
) -> RunningConsumer:
    topic = topic_name(subscription.topic, settings.kafka_topic_prefix)
    return RunningConsumer(
        PartitionedConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id,
            client_id="consumer-test",
            topics=[topic],
            applier=BatchApplier(
                group=group_id,
                pool=pool,
                subscriptions={topic: subscription},
                dead_letters=DeadLetterSink(
                    pool,
                    service=SCHEMA,
                    clock=SystemClock(),
                    copier=DeadLetterPublisher(broker, settings.kafka_topic_prefix).copy,
                ),
                retry=RetryPolicy(retry_count_max=3, backoff_s_initial=0.01, backoff_s_max=0.2),
            ),
            batch_size_max=500,
            concurrency_max=4,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )
    )


async def publish(
    broker: KafkaBroker, settings: ServiceSettings, events: list[PaymentCreated]
) -> None:
    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    futures = [
        await broker.publish(
            event.model_dump_json().encode(),
            topic=topic,
            key=event.aggregate_id.encode(),
            headers={"message_type": event.event_type},
            no_confirm=True,
        )
        for event in events
    ]
    await asyncio.gather(*futures)


def streams(count: int, versions: int) -> list[PaymentCreated]:
    """`count` streams of `versions` events each, interleaved as producers would send them."""
    ids = [f"pay_{uuid.uuid4().hex}" for _ in range(count)]
    return [created(stream_id, version) for version in range(1, versions + 1) for stream_id in ids]


async def effect_count(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM effects")
    return count


async def wait_for_count(
    pool: asyncpg.Pool, query: str, *arguments: object, at_least: int, what: str
) -> None:
    async def reached() -> bool:
        count: int = await pool.fetchval(query, *arguments)
        return count >= at_least

    await wait_until(reached, timeout_s=60, what=what)


async def test_batches_apply_every_record_once_in_key_order_with_few_transactions(
    pool: asyncpg.Pool, broker: KafkaBroker, settings: ServiceSettings
) -> None:
    events = streams(40, 10)
    # Every event twice: a relay that republished after a crash.
    await publish(broker, settings, events + events)
    subscription = Subscription(Topic.PAYMENTS_EVENTS, INBOX_NAME, {PaymentCreated: record_effect})
    group_id = f"consumer-test-{uuid.uuid4().hex[:6]}"
    async with running_consumer(settings, pool, broker, subscription, group_id=group_id):
        await wait_for_count(
            pool, "SELECT count(*) FROM effects", at_least=len(events), what="every event applied"
        )
        # The duplicates behind them are read and skipped, not applied.
        await publish(broker, settings, events[:5])
        marker = created(f"pay_{uuid.uuid4().hex}", 1)
        await publish(broker, settings, [marker])
        await wait_for_count(
            pool,
            "SELECT count(*) FROM effects WHERE message_id = $1",
            marker.event_id,
            at_least=1,
            what="the marker applied",
        )

    rows = await pool.fetch("SELECT stream_id, version, applied_in FROM effects ORDER BY seq")
    assert len(rows) == len(events) + 1
    per_stream: dict[str, list[int]] = {}
    for row in rows:
        per_stream.setdefault(row["stream_id"], []).append(row["version"])
    assert all(versions == sorted(versions) for versions in per_stream.values())
    assert sorted(len(v) for v in per_stream.values())[1:] == [10] * 40
    transactions = len({row["applied_in"] for row in rows})
    # 401 records over 8 partitions arrive in a handful of fetches: far fewer transactions
    # than records (one per record before batching).
    assert transactions <= len(rows) // 5, transactions

    # Offsets were committed after the transactions: the same group, started again,
    # has nothing left to apply.
    async with running_consumer(settings, pool, broker, subscription, group_id=group_id):
        late = created(f"pay_{uuid.uuid4().hex}", 1)
        await publish(broker, settings, [late])
        await wait_for_count(
            pool,
            "SELECT count(*) FROM effects WHERE message_id = $1",
            late.event_id,
            at_least=1,
            what="the late event applied",
        )
    assert await effect_count(pool) == len(events) + 2
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_a_record_refused_by_an_invariant_is_dead_lettered_alone(
    pool: asyncpg.Pool, broker: KafkaBroker, settings: ServiceSettings
) -> None:
    # One key: the whole batch lands on one partition, in one fetch.
    same_key = [created("pay_shared", version) for version in range(1, 31)]
    poisoned = same_key[17]

    async def refuse_one(connection: asyncpg.Connection, event: PaymentCreated) -> None:
        await record_effect(connection, event)
        if event.event_id == poisoned.event_id:
            raise InvariantViolation("this payment breaks a rule")

    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    for event in same_key:
        await broker.publish(
            event.model_dump_json().encode(),
            topic=topic,
            key=b"pay_shared",
            headers={"message_type": event.event_type},
            no_confirm=True,
        )
    subscription = Subscription(Topic.PAYMENTS_EVENTS, INBOX_NAME, {PaymentCreated: refuse_one})
    group_id = f"consumer-test-{uuid.uuid4().hex[:6]}"
    async with running_consumer(settings, pool, broker, subscription, group_id=group_id):
        await wait_for_count(
            pool, "SELECT count(*) FROM dead_letters", at_least=1, what="the poisoned record"
        )
        await wait_for_count(
            pool, "SELECT count(*) FROM effects", at_least=29, what="the others applied"
        )
    applied = {row["message_id"] for row in await pool.fetch("SELECT message_id FROM effects")}
    assert applied == {event.event_id for event in same_key} - {poisoned.event_id}
    letter = await pool.fetchrow("SELECT * FROM dead_letters")
    assert letter is not None
    assert letter["message_id"] == poisoned.event_id
    assert letter["reason"] == "InvariantViolation: this payment breaks a rule"
    assert letter["consumer"] == INBOX_NAME
    # The poisoned message has no inbox row: a redrive can still apply it.
    assert (
        await pool.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", poisoned.event_id)
        == 0
    )


async def test_records_of_types_not_handled_cost_no_transaction(
    pool: asyncpg.Pool, broker: KafkaBroker, settings: ServiceSettings
) -> None:
    handled = created(f"pay_{uuid.uuid4().hex}", 1)
    unhandled = [
        new_event(
            PaymentCanceled,
            {
                "order_id": "order-1",
                "amount_minor": 100,
                "currency": "CNY",
                "channel": "alipay",
                "fee_plan": {"basis_points": 60, "fixed_minor": 0},
                "reason": "customer asked",
            },
            aggregate_id=f"pay_{uuid.uuid4().hex}",
            aggregate_version=2,
            merchant_id="mch_test",
            producer="test",
            occurred_at=datetime.now(UTC),
            correlation_id="corr",
            causation_id=None,
        )
        for _ in range(20)
    ]
    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    for event in [*unhandled, handled]:
        await broker.publish(
            event.model_dump_json().encode(),
            topic=topic,
            key=b"one-key",
            headers={"message_type": event.event_type},
            no_confirm=True,
        )
    # Without the header, the type is read from the body (parsed once).
    await broker.publish(unhandled[0].model_dump_json().encode(), topic=topic, key=b"one-key")
    subscription = Subscription(Topic.PAYMENTS_EVENTS, INBOX_NAME, {PaymentCreated: record_effect})
    async with running_consumer(
        settings, pool, broker, subscription, group_id=f"consumer-test-{uuid.uuid4().hex[:6]}"
    ):
        await wait_for_count(
            pool, "SELECT count(*) FROM effects", at_least=1, what="the handled event applied"
        )
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_killed_database_backends_delay_batches_but_lose_and_park_nothing(
    pool: asyncpg.Pool, broker: KafkaBroker, settings: ServiceSettings
) -> None:
    """Terminate the consumer's PostgreSQL backends again and again under load
    (57P01 admin shutdown, then connection loss on the next use): every event applies
    exactly once and nothing is dead-lettered."""

    async def slow_effect(connection: asyncpg.Connection, event: PaymentCreated) -> None:
        await connection.execute("SELECT pg_sleep(0.002)")
        await record_effect(connection, event)

    events = streams(60, 5)
    subscription = Subscription(Topic.PAYMENTS_EVENTS, INBOX_NAME, {PaymentCreated: slow_effect})
    admin = await asyncpg.connect(settings.database_url)
    terminated = 0
    try:
        async with running_consumer(
            settings, pool, broker, subscription, group_id=f"consumer-test-{uuid.uuid4().hex[:6]}"
        ):
            for chunk_start in range(0, len(events), 50):
                await publish(broker, settings, events[chunk_start : chunk_start + 50])
                await asyncio.sleep(0.05)
                terminated += await admin.fetchval(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM"
                    " pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state <> 'idle') AS killed"
                )
            await wait_for_count(
                pool,
                "SELECT count(*) FROM effects",
                at_least=len(events),
                what="every event applied",
            )
    finally:
        await admin.close()
    assert terminated > 0, "no backend was busy when terminated; the test proved nothing"
    assert await effect_count(pool) == len(events)
    assert await pool.fetchval("SELECT count(DISTINCT message_id) FROM effects") == len(events)
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
