"""The consistency core against a real broker and a real PostgreSQL: the event store as
outbox, the relay, the idempotent inbox consumer and the dead-letter path."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from faststream.kafka import KafkaBroker

from schemas import Topic, decode, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import PaymentCreated, PaymentRequest
from services.common.broker import DeadLetterPublisher, KafkaRecordPublisher, build_broker
from services.common.clock import SystemClock
from services.common.consumer import BatchApplier, PartitionedConsumer, Subscription
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.dead_letters import DeadLetterSink
from services.common.event_store import ConcurrencyConflict, append_events, load_stream
from services.common.outbox import OutboundRecord, OutboxRelay
from services.common.settings import ServiceSettings
from tests.support.kafka import read_topic
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

SCHEMA = "runtime_test"


@pytest.fixture
async def pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(
        settings.database_url, SCHEMA, load_migrations("services.common.migrations")
    )
    pool = await create_pool(settings.database_url, SCHEMA)
    await pool.execute("CREATE TABLE effects (message_id uuid NOT NULL, note text)")
    yield pool
    await pool.close()


@pytest.fixture
async def broker(settings: ServiceSettings) -> AsyncIterator[KafkaBroker]:
    broker = build_broker(settings, client_id="runtime-test")
    yield broker
    await broker.stop()


def payment_created(payment_id: str, version: int = 1) -> PaymentCreated:
    return new_event(
        PaymentCreated,
        PaymentRequest(
            order_id=f"order-{uuid.uuid4().hex[:6]}",
            amount_minor=1000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
        ),
        aggregate_id=payment_id,
        aggregate_version=version,
        merchant_id="mch_test",
        producer="test",
        occurred_at=datetime.now(UTC),
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


async def test_two_concurrent_writers_on_one_stream_cannot_both_win(pool: asyncpg.Pool) -> None:
    payment_id = f"pay_{uuid.uuid4().hex}"
    async with pool.acquire() as connection, connection.transaction():
        await append_events(connection, payment_id, 0, [payment_created(payment_id)])

    start = asyncio.Event()

    async def writer() -> str:
        async with pool.acquire() as connection:
            await start.wait()
            async with connection.transaction():
                await append_events(connection, payment_id, 1, [payment_created(payment_id, 2)])
        return "won"

    tasks = [asyncio.create_task(writer()) for _ in range(2)]
    start.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(type(result).__name__ for result in results) == ["ConcurrencyConflict", "str"]
    assert all(isinstance(r, (str, ConcurrencyConflict)) for r in results)
    async with pool.acquire() as connection:
        assert [e.aggregate_version for e in await load_stream(connection, payment_id)] == [1, 2]


class CrashingPublisher:
    """Stands in for a relay process that dies: it optionally publishes, then raises."""

    def __init__(self, real: KafkaRecordPublisher | None) -> None:
        self.real = real

    async def publish_batch(self, records: Sequence[OutboundRecord]) -> None:
        if self.real is not None:
            await self.real.publish_batch(records)
        raise SystemExit("relay killed")


@pytest.mark.parametrize("dies_after_publishing", [False, True])
async def test_relay_killed_between_commit_and_mark_loses_nothing(
    pool: asyncpg.Pool, broker: KafkaBroker, settings: ServiceSettings, dies_after_publishing: bool
) -> None:
    await broker.connect()
    payment_ids = [f"pay_{uuid.uuid4().hex}" for _ in range(5)]
    async with pool.acquire() as connection, connection.transaction():
        for payment_id in payment_ids:
            await append_events(connection, payment_id, 0, [payment_created(payment_id)])

    real_publisher = KafkaRecordPublisher(broker)
    dying = OutboxRelay(
        pool,
        SCHEMA,
        CrashingPublisher(real_publisher if dies_after_publishing else None),
        topic_prefix=settings.kafka_topic_prefix,
    )
    with pytest.raises(SystemExit):
        await dying.publish_pending()
    assert await pool.fetchval("SELECT count(*) FROM event_store WHERE published_at IS NULL") == 5

    restarted = OutboxRelay(pool, SCHEMA, real_publisher, topic_prefix=settings.kafka_topic_prefix)
    assert await restarted.publish_pending() == 5
    assert await pool.fetchval("SELECT count(*) FROM event_store WHERE published_at IS NULL") == 0

    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    expected_copies = 2 if dies_after_publishing else 1
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic,
        until=lambda seen: len(seen) >= 5 * expected_copies,
    )
    seen_ids = [decode(Topic.PAYMENTS_EVENTS, record.value).aggregate_id for record in records]
    assert sorted(set(seen_ids)) == sorted(payment_ids)
    assert len(seen_ids) == 5 * expected_copies


async def test_a_relay_process_killed_holding_a_batch_loses_nothing(
    pool: asyncpg.Pool, broker: KafkaBroker, settings: ServiceSettings, tmp_path: Path
) -> None:
    """SIGKILL a real relay process after it took the batch inside its transaction and
    before it published: PostgreSQL rolls its transaction back, and a new relay publishes
    everything."""
    payment_ids = [f"pay_{uuid.uuid4().hex}" for _ in range(3)]
    async with pool.acquire() as connection, connection.transaction():
        for payment_id in payment_ids:
            await append_events(connection, payment_id, 0, [payment_created(payment_id)])
    marker = tmp_path / "holding-batch"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.hanging_relay",
        settings.database_url,
        SCHEMA,
        settings.kafka_topic_prefix,
        str(marker),
    )
    try:
        await wait_until(marker.exists, timeout_s=20, what="the relay to hold its batch")
        assert marker.read_text() == "3"
    finally:
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), timeout=10)
    assert await pool.fetchval("SELECT count(*) FROM event_store WHERE published_at IS NULL") == 3

    await broker.connect()
    restarted = OutboxRelay(
        pool, SCHEMA, KafkaRecordPublisher(broker), topic_prefix=settings.kafka_topic_prefix
    )
    # The killed backend's advisory lock goes when PostgreSQL notices the dead client.
    published: list[int] = []

    async def all_published() -> bool:
        published.append(await restarted.publish_pending())
        return sum(published) >= 3

    await wait_until(all_published, timeout_s=20, what="the restarted relay to publish")
    assert sum(published) == 3
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix),
        until=lambda seen: len(seen) >= 3,
    )
    assert sorted(decode(Topic.PAYMENTS_EVENTS, r.value).aggregate_id for r in records) == sorted(
        payment_ids
    )


async def test_redelivered_event_is_applied_once_and_poison_is_dead_lettered(
    pool: asyncpg.Pool, broker: KafkaBroker, settings: ServiceSettings
) -> None:
    applied: list[uuid.UUID] = []
    both_applied = asyncio.Event()

    async def record_effect(connection: asyncpg.Connection, event: PaymentCreated) -> None:
        await connection.execute("INSERT INTO effects (message_id) VALUES ($1)", event.event_id)
        applied.append(event.event_id)
        if len(applied) == 2:
            both_applied.set()

    await broker.connect()
    subscription = Subscription(
        Topic.PAYMENTS_EVENTS, "runtime-test:payments.events", {PaymentCreated: record_effect}
    )
    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    consumer = PartitionedConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"runtime-test-{uuid.uuid4().hex[:6]}",
        client_id="runtime-test",
        topics=[topic],
        applier=BatchApplier(
            group="runtime-test",
            pool=pool,
            subscriptions={topic: subscription},
            dead_letters=DeadLetterSink(
                pool,
                service=SCHEMA,
                clock=SystemClock(),
                copier=DeadLetterPublisher(broker, settings.kafka_topic_prefix).copy,
            ),
        ),
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    await consumer.start()
    running = asyncio.create_task(consumer.run())
    try:
        event = payment_created(f"pay_{uuid.uuid4().hex}")
        body = event.model_dump_json().encode()
        after = payment_created(f"pay_{uuid.uuid4().hex}")
        await broker.publish(body, topic=topic, key=b"k")
        await broker.publish(b"{not json", topic=topic, key=b"k")
        await broker.publish(body, topic=topic, key=b"k")  # the same event delivered again
        await broker.publish(after.model_dump_json().encode(), topic=topic, key=b"k")

        await asyncio.wait_for(both_applied.wait(), timeout=20)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await consumer.stop()
    assert applied == [event.event_id, after.event_id]
    assert await pool.fetchval("SELECT count(*) FROM effects") == 2

    dead = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.DEAD_LETTERS, settings.kafka_topic_prefix),
        until=lambda seen: len(seen) >= 1,
    )
    assert [record.value for record in dead] == [b"{not json"]
    reason = dict(dead[0].headers)["dead_letter_reason"].decode()
    assert reason.startswith("undecodable: body is not JSON")
    parked = await pool.fetch("SELECT consumer, body, reason, status FROM dead_letters")
    assert [(row["consumer"], bytes(row["body"]), row["status"]) for row in parked] == [
        ("runtime-test:payments.events", b"{not json", "parked")
    ]


async def test_events_appended_together_take_positions_in_version_order(
    pool: asyncpg.Pool,
) -> None:
    payment_id = f"pay_{uuid.uuid4().hex}"
    events = [payment_created(payment_id, version) for version in range(1, 8)]
    async with pool.acquire() as connection, connection.transaction():
        await append_events(connection, payment_id, 0, events)
    rows = await pool.fetch(
        "SELECT stream_version FROM event_store WHERE stream_id = $1 ORDER BY position",
        payment_id,
    )
    assert [row["stream_version"] for row in rows] == list(range(1, 8))
    async with pool.acquire() as connection:
        assert [e.event_id for e in await load_stream(connection, payment_id)] == [
            e.event_id for e in events
        ]
