"""The outbox relay's guarantees against a real PostgreSQL and a real broker: one round per
schema at a time, position order whatever the storage order, quick retries behind another
relay's round, and the whole history published again to a broker that lost it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy
from faststream.kafka import KafkaBroker

from schemas import Topic, topic_name
from services.common.broker import KafkaRecordPublisher, build_broker, ensure_topics
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.infrastructure import free_port, start_embedded_broker, stop_process
from services.common.outbox import (
    KafkaClusterIdentity,
    OutboundRecord,
    OutboxRelay,
    RecordPublisher,
)
from services.common.service import RUNTIME_MIGRATIONS
from services.common.settings import ServiceSettings
from tests.support.kafka import read_topic
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

SCHEMA = "relay_test"
TOPIC = Topic.PAYMENTS_EVENTS
# Longest a test lets a publisher hold a round; a test that forgets to release fails
# instead of hanging.
ROUND_HOLD_S_MAX = 20.0


@pytest.fixture
async def pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(settings.database_url, SCHEMA, load_migrations(RUNTIME_MIGRATIONS))
    pool = await create_pool(settings.database_url, SCHEMA)
    yield pool
    await pool.close()


@pytest.fixture
async def kafka_publisher(settings: ServiceSettings) -> AsyncIterator[KafkaRecordPublisher]:
    broker = build_broker(settings, client_id="relay-test")
    await broker.connect()
    yield KafkaRecordPublisher(broker)
    await broker.stop()


async def write_messages(pool: asyncpg.Pool, count: int, *, key: str = "key-1") -> list[int]:
    """Commit `count` messages for `key` in one transaction. Returns their positions."""
    rows = await pool.fetch(
        "INSERT INTO event_store (message_id, message_type, topic, message_key, merchant_id,"
        " correlation_id, body)"
        " SELECT gen_random_uuid(), 'RelayTestMessage', $1, $2, 'mch_test', 'corr_test',"
        " jsonb_build_object('n', n) FROM generate_series(1, $3) AS n"
        " RETURNING position",
        TOPIC.value,
        key,
        count,
    )
    return sorted(row["position"] for row in rows)


async def unpublished_positions(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch(
        "SELECT position FROM event_store WHERE published_at IS NULL ORDER BY position"
    )
    return [row["position"] for row in rows]


class RecordingPublisher:
    """Remembers every batch, after handing it to `forward_to` when there is one."""

    def __init__(self, forward_to: RecordPublisher | None = None) -> None:
        self.forward_to = forward_to
        self.batches: list[list[OutboundRecord]] = []
        self.failures_to_raise = 0

    async def publish_batch(self, records: Sequence[OutboundRecord]) -> None:
        if self.failures_to_raise:
            self.failures_to_raise -= 1
            raise ConnectionError("broker went away")
        if self.forward_to is not None:
            await self.forward_to.publish_batch(records)
        self.batches.append(list(records))

    @property
    def positions(self) -> list[int]:
        return [record.position for batch in self.batches for record in batch]


class HoldingPublisher:
    """Takes a batch and holds it, inside the relay's round, until released."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.batches: list[list[OutboundRecord]] = []

    async def publish_batch(self, records: Sequence[OutboundRecord]) -> None:
        self.batches.append(list(records))
        self.holding.set()
        await asyncio.wait_for(self.release.wait(), ROUND_HOLD_S_MAX)


class SwitchableBrokerIdentity:
    """Stands in for a broker whose cluster id the test changes, as a restart of a
    memory-only broker would."""

    def __init__(self, cluster_id: str) -> None:
        self.current = cluster_id

    async def cluster_id(self) -> str:
        return self.current


# -- one round per schema ---------------------------------------------------------------


async def test_a_second_relay_publishes_nothing_while_the_first_holds_its_round(
    pool: asyncpg.Pool,
) -> None:
    positions = await write_messages(pool, 5)
    holder_publisher = HoldingPublisher()
    holder = OutboxRelay(pool, SCHEMA, holder_publisher)
    other_publisher = RecordingPublisher()
    other = OutboxRelay(pool, SCHEMA, other_publisher)

    holding = asyncio.create_task(holder.publish_pending())
    try:
        await asyncio.wait_for(holder_publisher.holding.wait(), 10)
        # The held rows are still unpublished (they are marked after the publish
        # returns), so only the advisory lock keeps the second relay off them.
        assert await unpublished_positions(pool) == positions
        for _ in range(3):
            assert await other.publish_pending() == 0
        assert other_publisher.batches == []
    finally:
        holder_publisher.release.set()
    assert await asyncio.wait_for(holding, 10) == 5
    assert [record.position for record in holder_publisher.batches[0]] == positions
    assert await other.publish_pending() == 0
    assert other_publisher.batches == []
    assert await unpublished_positions(pool) == []


async def test_a_relay_behind_another_relays_round_publishes_soon_after_it_not_a_poll_later(
    pool: asyncpg.Pool, settings: ServiceSettings
) -> None:
    held = await write_messages(pool, 3)
    holder_publisher = HoldingPublisher()
    holder = OutboxRelay(pool, SCHEMA, holder_publisher)
    holding = asyncio.create_task(holder.publish_pending())
    await asyncio.wait_for(holder_publisher.holding.wait(), 10)

    # Every round of the waiting relay starts with a pool acquisition; counting them shows
    # when it has tried (and, the round being held, failed) at least once.
    acquisitions: list[int] = []

    async def count_acquisition(_connection: PoolConnectionProxy) -> None:
        acquisitions.append(1)

    waiting_pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=2,
        setup=count_acquisition,
        server_settings={"search_path": f"{SCHEMA},public"},
    )
    waiting_publisher = RecordingPublisher()
    # A poll interval far beyond the test's deadlines: only the retry after a held
    # round can publish in time.
    waiting = OutboxRelay(waiting_pool, SCHEMA, waiting_publisher, poll_interval_ms=60_000)
    running = asyncio.create_task(waiting.run())
    try:
        written_behind = await write_messages(pool, 2)
        waiting.wake()
        # A round that finds the lock taken makes two acquisitions (the probe and the
        # transaction). Its start and the wake make two rounds; a third, and so a fifth
        # acquisition, comes only from retrying soon after a round found the lock taken.
        await wait_until(
            lambda: len(acquisitions) >= 6, timeout_s=2, what="the waiting relay to retry"
        )
        assert waiting_publisher.batches == []
        holder_publisher.release.set()
        assert await asyncio.wait_for(holding, 10) == 3
        await wait_until(
            lambda: waiting_publisher.positions == written_behind,
            timeout_s=2,
            what="the rows written behind the held round to be published",
        )
    finally:
        holder_publisher.release.set()
        running.cancel()
        await asyncio.gather(holding, running, return_exceptions=True)
        await waiting_pool.close()
    assert [record.position for record in holder_publisher.batches[0]] == held


# -- order -------------------------------------------------------------------------------


async def test_the_records_of_one_key_arrive_in_position_order_whatever_the_storage_order(
    pool: asyncpg.Pool, settings: ServiceSettings, kafka_publisher: KafkaRecordPublisher
) -> None:
    key = f"pay_{uuid.uuid4().hex}"
    # Rows stored last position first: a scan in storage order sees 10, 9, ..., 1.
    for position in range(10, 0, -1):
        await pool.execute(
            "INSERT INTO event_store (position, message_id, message_type, topic, message_key,"
            " merchant_id, correlation_id, body) OVERRIDING SYSTEM VALUE"
            " VALUES ($1, gen_random_uuid(), 'RelayTestMessage', $2, $3, 'mch_test',"
            " 'corr_test', jsonb_build_object('position', $1::bigint))",
            position,
            TOPIC.value,
            key,
        )
    # Without index scans the relay's query must read the table in storage order, so
    # only its ORDER BY can put the rows in position order.
    scanning_pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=2,
        server_settings={
            "search_path": f"{SCHEMA},public",
            "enable_indexscan": "off",
            "enable_indexonlyscan": "off",
            "enable_bitmapscan": "off",
        },
    )
    try:
        stored = await scanning_pool.fetch(
            "SELECT position FROM event_store WHERE published_at IS NULL"
        )
        assert [row["position"] for row in stored] == list(range(10, 0, -1))

        publisher = RecordingPublisher(forward_to=kafka_publisher)
        relay = OutboxRelay(
            scanning_pool,
            SCHEMA,
            publisher,
            topic_prefix=settings.kafka_topic_prefix,
            batch_size_max=4,
        )
        published = [await relay.publish_pending() for _ in range(4)]
    finally:
        await scanning_pool.close()
    assert published == [4, 4, 2, 0]
    assert publisher.positions == list(range(1, 11))

    sent = [record.headers["message_id"] for batch in publisher.batches for record in batch]
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(TOPIC, settings.kafka_topic_prefix),
        until=lambda seen: len(seen) >= 10,
    )
    received = [dict(record.headers)["message_id"].decode() for record in records]
    assert received == sent


# -- a broker that lost its history ------------------------------------------------------


async def test_a_new_broker_gets_the_whole_history_again_in_position_order(
    pool: asyncpg.Pool, settings: ServiceSettings, kafka_publisher: KafkaRecordPublisher
) -> None:
    positions = await write_messages(pool, 4)
    broker = SwitchableBrokerIdentity("cluster-a")
    publisher = RecordingPublisher(forward_to=kafka_publisher)
    relay = OutboxRelay(
        pool, SCHEMA, publisher, topic_prefix=settings.kafka_topic_prefix, broker_identity=broker
    )
    # The first start on a store that has published nothing just records the broker.
    assert await relay.check_broker_identity() == 0
    assert await pool.fetchval("SELECT cluster_id FROM relay_broker_identity") == "cluster-a"
    assert await relay.publish_pending() == 4

    # The same broker again: nothing to do.
    assert await relay.check_broker_identity() == 0
    assert await unpublished_positions(pool) == []

    broker.current = "cluster-b"
    assert await relay.check_broker_identity() == 4
    assert await unpublished_positions(pool) == positions
    assert await pool.fetchval("SELECT cluster_id FROM relay_broker_identity") == "cluster-b"
    assert await relay.publish_pending() == 4
    assert publisher.positions == positions + positions

    assert await relay.check_broker_identity() == 0
    assert await relay.publish_pending() == 0

    # A reader that starts now (a consumer group the lost broker never knew) sees every
    # message once per publishing: the round before the change and the one after it.
    message_ids = [record.headers["message_id"] for record in publisher.batches[0]]
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(TOPIC, settings.kafka_topic_prefix),
        until=lambda seen: len(seen) >= 8,
    )
    received = [dict(record.headers)["message_id"].decode() for record in records]
    assert received == message_ids + message_ids


async def test_a_store_published_before_the_broker_was_recorded_is_published_again(
    pool: asyncpg.Pool,
) -> None:
    """A schema migrated from before the broker was recorded: which broker holds what it
    published is unknown, so the relay cannot assume it is this one."""
    positions = await write_messages(pool, 3)
    await pool.execute("UPDATE event_store SET published_at = now()")
    relay = OutboxRelay(
        pool, SCHEMA, RecordingPublisher(), broker_identity=SwitchableBrokerIdentity("cluster-a")
    )
    assert await relay.check_broker_identity() == 3
    assert await unpublished_positions(pool) == positions
    assert await pool.fetchval("SELECT cluster_id FROM relay_broker_identity") == "cluster-a"


@pytest.mark.parametrize("noticed_by", ["a failed round", "the periodic check"])
async def test_a_running_relay_notices_a_new_broker_and_publishes_everything_again(
    pool: asyncpg.Pool, noticed_by: str
) -> None:
    first = await write_messages(pool, 3)
    broker = SwitchableBrokerIdentity("cluster-a")
    publisher = RecordingPublisher()
    relay = OutboxRelay(
        pool,
        SCHEMA,
        publisher,
        poll_interval_ms=50,
        broker_identity=broker,
        broker_identity_check_interval_ms=60_000 if noticed_by == "a failed round" else 200,
    )
    running = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: publisher.positions == first, timeout_s=5, what="first rows")
        broker.current = "cluster-b"
        if noticed_by == "a failed round":
            publisher.failures_to_raise = 1
        later = await write_messages(pool, 1)
        relay.wake()
        # The new row may go out before the change is noticed; either way the history
        # ends with every row again, in position order.
        await wait_until(
            lambda: (
                len(publisher.positions) >= 2 * len(first) + len(later)
                and publisher.positions[-len(first + later) :] == first + later
            ),
            timeout_s=5,
            what="the whole history published again, in position order",
        )
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await pool.fetchval("SELECT cluster_id FROM relay_broker_identity") == "cluster-b"
    assert await unpublished_positions(pool) == []


async def test_a_restarted_embedded_broker_gets_the_history_a_running_relay_published(
    pool: asyncpg.Pool, settings: ServiceSettings
) -> None:
    """Two real broker processes on one address, one after the other, under one running
    relay: the second starts empty with a new cluster id, and ends up with every message."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    local = ServiceSettings(
        **{
            **settings.model_dump(),
            "kafka_bootstrap_servers": bootstrap,
            "kafka_topic_prefix": "",
            "kafka_enable_idempotence": False,
        }
    )
    first_broker = start_embedded_broker(port)
    second_broker = None
    producer: KafkaBroker | None = None
    running: asyncio.Task[None] | None = None
    try:
        await ensure_topics(local)
        identity = KafkaClusterIdentity(bootstrap, request_timeout_ms=5_000)
        first_cluster_id = await identity.cluster_id()
        producer = build_broker(local, client_id="relay-restart-test")
        await producer.connect()
        relay = OutboxRelay(
            pool,
            SCHEMA,
            KafkaRecordPublisher(producer),
            poll_interval_ms=50,
            broker_identity=identity,
            broker_identity_check_interval_ms=300,
        )
        running = asyncio.create_task(relay.run())
        await write_messages(pool, 3)
        relay.wake()
        await wait_until(
            lambda: _all_published(pool), timeout_s=10, what="publishing to the first broker"
        )
        assert await pool.fetchval("SELECT cluster_id FROM relay_broker_identity") == (
            first_cluster_id
        )

        stop_process(first_broker)
        second_broker = start_embedded_broker(port)
        await ensure_topics(local)
        second_cluster_id = await identity.cluster_id()
        assert second_cluster_id != first_cluster_id

        topic = topic_name(TOPIC)
        records = await read_topic(
            bootstrap, topic, until=lambda seen: len(seen) >= 3, timeout_s=30
        )
        assert len(records) == 3
        assert await pool.fetchval("SELECT cluster_id FROM relay_broker_identity") == (
            second_cluster_id
        )
    finally:
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        if producer is not None:
            await producer.stop()
        stop_process(first_broker)
        if second_broker is not None:
            stop_process(second_broker)


async def _all_published(pool: asyncpg.Pool) -> bool:
    published: bool = await pool.fetchval(
        "SELECT count(*) = 3 AND bool_and(published_at IS NOT NULL) FROM event_store"
    )
    return published
