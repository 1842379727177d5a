"""A PostgreSQL restart under load: the consumer waits it out and loses, repeats and parks
nothing.

The test owns a private PostgreSQL server (from the pgserver wheel, whatever server the
other tests use) so that it can restart it: a fast shutdown ends every backend with
57P01 (admin shutdown), connections are refused while it is down, and 57P03 (cannot
connect now) is answered while it starts. The consumer's backends are also terminated
one by one while batches run.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY

from schemas import Topic, topic_name
from schemas.payments import PaymentCreated
from services.common.broker import DeadLetterPublisher, build_broker
from services.common.clock import SystemClock
from services.common.consumer import BatchApplier, PartitionedConsumer, RetryPolicy, Subscription
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.dead_letters import DeadLetterSink
from services.common.infrastructure import start_embedded_postgres, stop_embedded_postgres
from services.common.settings import ServiceSettings
from tests.integration.test_batch_consumer import created, publish, record_effect
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

SCHEMA = "restart_test"


class PrivatePostgres:
    def __init__(self, handle: Any, data_dir: Path) -> None:
        self._handle = handle
        self.data_dir = data_dir
        self.dsn: str = handle.get_uri()

    def restart(self, mode: str) -> None:
        """`pg_ctl restart -m mode` as the server's own user; returns once it accepts
        connections again."""
        from pgserver import _commands  # the wheel's own pg_ctl

        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-t", "60", "restart", "-m", mode],
            pgdata=self.data_dir,
            user=self._handle.system_user,
            timeout=90,
        )


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    data_dir = Path(tempfile.mkdtemp(prefix="payrail-restart-pg-")) / "pgdata"
    _dsn, handle = start_embedded_postgres(data_dir)
    try:
        yield PrivatePostgres(handle, data_dir)
    finally:
        stop_embedded_postgres(handle)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
async def pool(private_postgres: PrivatePostgres) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(
        private_postgres.dsn, SCHEMA, load_migrations("services.common.migrations")
    )
    pool = await create_pool(private_postgres.dsn, SCHEMA, size_max=8, command_timeout_s=5)
    await pool.execute(
        "CREATE TABLE effects (message_id uuid NOT NULL, stream_id text NOT NULL,"
        " version integer NOT NULL)"
    )
    yield pool
    await pool.close()


@pytest.fixture
async def broker(settings: ServiceSettings) -> AsyncIterator[KafkaBroker]:
    broker = build_broker(settings, client_id="restart-test")
    await broker.connect()
    yield broker
    await broker.stop()


async def test_a_database_restart_under_load_applies_everything_once_and_parks_nothing(
    private_postgres: PrivatePostgres,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    settings: ServiceSettings,
) -> None:
    async def slow_effect(connection: asyncpg.Connection, event: PaymentCreated) -> None:
        # Keeps batches in their transactions long enough for the restart to land in one.
        await connection.execute("SELECT pg_sleep(0.003)")
        await record_effect(connection, event)

    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    subscription = Subscription(
        Topic.PAYMENTS_EVENTS, "restart-test:payments.events", {PaymentCreated: slow_effect}
    )
    applier = BatchApplier(
        group="restart-test",
        pool=pool,
        subscriptions={topic: subscription},
        dead_letters=DeadLetterSink(
            pool,
            service=SCHEMA,
            clock=SystemClock(),
            copier=DeadLetterPublisher(broker, settings.kafka_topic_prefix).copy,
        ),
        retry=RetryPolicy(retry_count_max=3, backoff_s_initial=0.05, backoff_s_max=1.0),
    )
    consumer = PartitionedConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"restart-test-{uuid.uuid4().hex[:6]}",
        client_id="restart-test",
        topics=[topic],
        applier=applier,
        batch_size_max=100,
        concurrency_max=4,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    streams = [f"pay_{uuid.uuid4().hex}" for _ in range(80)]
    events = [created(stream, version) for stream in streams for version in (1, 2, 3, 4, 5)]
    await consumer.start()
    running = asyncio.create_task(consumer.run())
    admin: asyncpg.Connection | None = None
    try:
        await publish(broker, settings, events[:150])

        async def some_applied() -> bool:
            count: int = await pool.fetchval("SELECT count(*) FROM effects")
            return count > 0

        await wait_until(some_applied, timeout_s=60, what="the first batches applied")
        # Restart while batches are in their transactions, and keep producing meanwhile.
        producing = asyncio.create_task(publish(broker, settings, events[150:300]))
        await asyncio.to_thread(private_postgres.restart, "fast")
        await producing
        admin = await asyncpg.connect(private_postgres.dsn, timeout=10)
        await publish(broker, settings, events[300:])
        await asyncio.sleep(0.05)
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        # A crash (immediate shutdown: recovery from the WAL on start) as well.
        await admin.close()
        admin = None
        await asyncio.to_thread(private_postgres.restart, "immediate")

        async def all_applied() -> bool:
            try:
                count: int = await pool.fetchval("SELECT count(*) FROM effects")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False
            return count >= len(events)

        await wait_until(all_applied, timeout_s=120, what="every event applied")
        assert not running.done(), "the consumer stopped instead of waiting the outage out"
    finally:
        if admin is not None:
            await admin.close()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await consumer.stop()
    assert await pool.fetchval("SELECT count(*) FROM effects") == len(events)
    assert await pool.fetchval("SELECT count(DISTINCT message_id) FROM effects") == len(events)
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    retries = REGISTRY.get_sample_value(
        "payrail_consumer_transient_retries_total", {"group": "restart-test"}
    )
    assert retries is not None and retries > 0, "no batch met the outage; the test proved nothing"
