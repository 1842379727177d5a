"""The ledger's projection rate next to a raw PostgreSQL COPY of the rows it produced.

`make bench` calls `measure_ledger_projection`; `python -m bench.ledger_projection
--events 5000` runs it alone (embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set;
DATABASE_URL, else PostgreSQL on 127.0.0.1:5432, else an embedded pgserver).

1. Projection. N synthetic, valid events (PaymentSucceeded across MERCHANT_COUNT merchants,
   every channel and its currency, and one RefundSucceeded of an earlier payment in
   REFUND_EVERY) are produced to a fresh `payments.events` topic, then the ledger's live
   consumer path replays them into a fresh schema migrated like the ledger's: a FastStream
   subscriber registered by `services.common.consumer.subscribe` (the ledger's group-id
   form, NACK_ON_ERROR, one record at a time, the offset committed after each),
   `InboxConsumer.handle_record` (decode, then the inbox row and the effect in one
   transaction per event) and `services.ledger.handlers.post_event` (journal entry,
   postings, balance upsert, JournalEntryPosted outbox row), wired as
   `services.ledger.app.wire_ledger` wires them. The rate is events divided by the time
   from the first record handed to the consumer to the commit of the last one's
   transaction. The outbox relay does not run (JournalEntryPosted rows are written, not
   published) and the callers log JSON at INFO into a file, as the ledger process does.
2. COPY. The journal_entries and postings rows that projection wrote are read back and
   loaded with asyncpg's `copy_records_to_table` into tables of the same columns with no
   key, index, check or trigger, in another scratch schema: both tables in one transaction,
   commit included; the median of COPY_REPEAT_COUNT runs. Its events/s counts journal
   entries (one per event).

Before the COPY, the projected balances are compared with the sum of the events' postings
(the ledger's pure rules), so the figure is known to measure the real work; a mismatch
raises ProjectionMismatch. Both scratch schemas are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.part_logging import service_logging
from schemas import Event, Topic, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import PaymentSucceeded, PaymentSucceededPayload
from schemas.refunds import RefundInitiator, RefundSucceeded, RefundSucceededPayload
from services.common.broker import DeadLetterPublisher, build_broker
from services.common.clock import SystemClock
from services.common.consumer import (
    BatchApplier,
    BatchOutcome,
    PartitionedConsumer,
    Record,
    RetryPolicy,
    Subscription,
    subscription_topics,
)
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.dead_letters import DeadLetterSink
from services.common.infrastructure import (
    EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    free_port,
    port_is_open,
    start_embedded_broker,
    start_embedded_postgres,
    stop_embedded_postgres,
    stop_process,
)
from services.common.launcher import SERVICE_MIGRATIONS
from services.common.service import RUNTIME_MIGRATIONS
from services.common.settings import ServiceSettings
from services.ledger.app import SERVICE_NAME, payment_event_handlers
from services.ledger.domain import ENTRY_RULES
from services.ledger.rebuild import AccountKey, balance_differences, project_balances

EVENT_COUNT_DEFAULT = 20_000
EVENT_COUNT_MAX = 1_000_000
MERCHANT_COUNT = 50
REFUND_EVERY = 25  # one event in 25 refunds part of an earlier payment
COPY_REPEAT_COUNT = 3
PROJECTION_TIMEOUT_S_DEFAULT = 600.0
KAFKA_TIMEOUT_S = 60.0
PROJECTION_PATH = (
    "kafka -> partitioned batch consumer -> inbox (1 statement/batch) -> post_events, 1 tx/batch"
)

# Currency and price of each channel, as the demo merchant's terms in the launcher.
CHANNEL_TERMS: dict[Channel, tuple[str, FeePlan]] = {
    Channel.ALIPAY: ("CNY", FeePlan(basis_points=60, fixed_minor=0)),
    Channel.WECHAT_PAY: ("CNY", FeePlan(basis_points=60, fixed_minor=0)),
    Channel.CARD: ("USD", FeePlan(basis_points=290, fixed_minor=30)),
}
_FIRST_OCCURRED_AT = datetime(2024, 5, 1, tzinfo=UTC)

ENTRY_COLUMNS = ("entry_id", "source_event_id", "kind", "merchant_id", "occurred_at", "recorded_at")
POSTING_COLUMNS = ("entry_id", "line", "account_id", "currency", "amount_minor")
# The journal's columns and types (services/ledger/migrations/100_journal.sql), nothing else.
_UNCONSTRAINED_TABLES = """
CREATE TABLE {schema}.journal_entries (
    entry_id text, source_event_id uuid, kind text, merchant_id text,
    occurred_at timestamptz, recorded_at timestamptz
);
CREATE TABLE {schema}.postings (
    entry_id text, line smallint, account_id text, currency char(3), amount_minor bigint
);
"""


class ProjectionMismatch(RuntimeError):
    """The projected journal or balances are not what the produced events call for."""


@dataclass(frozen=True)
class ProjectionTiming:
    # From the first record handed to the consumer to the commit of the last one's
    # transaction.
    elapsed_s: float
    # The time batches spent in the applier (decode, transaction, commit), summed over
    # batches; partitions are applied side by side, so it may exceed elapsed_s.
    in_consumer_s: float
    batch_count: int


@dataclass(frozen=True)
class JournalRows:
    entries: list[tuple[Any, ...]]
    postings: list[tuple[Any, ...]]


def synthetic_events(count: int, seed: int = 1) -> list[Event]:
    """`count` valid events: payments of random merchants, channels and amounts, and every
    REFUND_EVERY-th event a refund of part of an earlier, not yet refunded payment.

    Amounts, merchants and channels depend only on `seed`; event ids are fresh each call.
    """
    if not 1 <= count <= EVENT_COUNT_MAX:
        raise ValueError(f"count must be between 1 and {EVENT_COUNT_MAX}, got {count}")
    generator = random.Random(seed)
    channels = list(CHANNEL_TERMS)
    unrefunded: list[PaymentSucceeded] = []
    events: list[Event] = []
    for index in range(count):
        occurred_at = _FIRST_OCCURRED_AT + timedelta(seconds=index)
        if index % REFUND_EVERY == REFUND_EVERY - 1 and unrefunded:
            payment = unrefunded.pop(generator.randrange(len(unrefunded)))
            amount_minor = generator.randint(1, payment.payload.amount_minor)
            events.append(_refund(payment, amount_minor, occurred_at))
            continue
        merchant_id = f"mch_bench_{generator.randrange(MERCHANT_COUNT):03d}"
        channel = generator.choice(channels)
        payment = _payment(merchant_id, channel, generator.randint(100, 500_000), occurred_at)
        unrefunded.append(payment)
        events.append(payment)
    return events


def _payment(
    merchant_id: str, channel: Channel, amount_minor: int, occurred_at: datetime
) -> PaymentSucceeded:
    payment_id = f"pay_{uuid.uuid4().hex}"
    currency, fee_plan = CHANNEL_TERMS[channel]
    return new_event(
        PaymentSucceeded,
        PaymentSucceededPayload(
            order_id=f"order-{uuid.uuid4().hex[:12]}",
            amount_minor=amount_minor,
            currency=currency,
            channel=channel,
            fee_plan=fee_plan,
            channel_trade_id=f"trade-{uuid.uuid4().hex[:12]}",
            paid_at=occurred_at,
        ),
        aggregate_id=payment_id,
        aggregate_version=4,
        merchant_id=merchant_id,
        producer="payment_center",
        occurred_at=occurred_at,
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


def _refund(payment: PaymentSucceeded, amount_minor: int, occurred_at: datetime) -> RefundSucceeded:
    return new_event(
        RefundSucceeded,
        RefundSucceededPayload(
            refund_id=f"re_{uuid.uuid4().hex}",
            amount_minor=amount_minor,
            currency=payment.payload.currency,
            channel=payment.payload.channel,
            reason="bench",
            initiator=RefundInitiator.MERCHANT,
            order_id=payment.payload.order_id,
            channel_refund_id=f"refund-{uuid.uuid4().hex[:12]}",
            succeeded_at=occurred_at,
        ),
        aggregate_id=payment.aggregate_id,
        aggregate_version=6,
        merchant_id=payment.merchant_id,
        producer="payment_center",
        occurred_at=occurred_at,
        correlation_id=payment.correlation_id,
        causation_id=None,
    )


async def create_topics(settings: ServiceSettings, topics: Sequence[Topic]) -> None:
    """Create `topics` under the settings' prefix, partitioned like payrail's own topics."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    await asyncio.wait_for(admin.start(), KAFKA_TIMEOUT_S)
    try:
        new_topics = [
            NewTopic(
                topic_name(topic, settings.kafka_topic_prefix),
                num_partitions=settings.kafka_topic_partitions,
                replication_factor=1,
            )
            for topic in topics
        ]
        await asyncio.wait_for(admin.create_topics(new_topics), KAFKA_TIMEOUT_S)
    finally:
        await admin.close()


async def delete_topics(settings: ServiceSettings, topics: Sequence[Topic]) -> None:
    """Delete `topics` under the settings' prefix; a broker that refuses is left as it is."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    with contextlib.suppress(Exception):
        await asyncio.wait_for(admin.start(), KAFKA_TIMEOUT_S)
        try:
            names = [topic_name(topic, settings.kafka_topic_prefix) for topic in topics]
            await asyncio.wait_for(admin.delete_topics(names), KAFKA_TIMEOUT_S)
        finally:
            await admin.close()


async def produce_events(settings: ServiceSettings, events: Sequence[Event]) -> None:
    """Produce `events` to the settings' `payments.events`, keyed by aggregate id as the
    outbox relay keys them (a refund follows its payment in one partition)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=5,
    )
    await asyncio.wait_for(producer.start(), KAFKA_TIMEOUT_S)
    try:
        topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
        futures = [
            await producer.send(
                topic,
                value=event.model_dump_json().encode(),
                key=event.aggregate_id.encode(),
                # As the outbox relay sends them: the consumer reads the type from here.
                headers=[("message_type", event.event_type.encode())],
            )
            for event in events
        ]
        await asyncio.wait_for(asyncio.gather(*futures), KAFKA_TIMEOUT_S)
    finally:
        await producer.stop()


class _TimedApplier(BatchApplier):
    """The ledger's batch applier, noting when its first batch arrived and its last one
    committed."""

    def __init__(self, *, expected_count: int, **options: Any) -> None:
        super().__init__(**options)
        self.expected_count = expected_count
        self.handled_count = 0
        self.batch_count = 0
        self.first_started_s: float | None = None
        self.last_committed_s: float | None = None
        self.in_consumer_s = 0.0
        self.all_handled = asyncio.Event()

    async def apply(self, records: Sequence[Record]) -> BatchOutcome:
        started_s = time.perf_counter()
        if self.first_started_s is None:
            self.first_started_s = started_s
        outcome = await super().apply(records)
        # apply returns once the batch's transaction has committed.
        self.last_committed_s = time.perf_counter()
        self.in_consumer_s += self.last_committed_s - started_s
        self.handled_count += len(records)
        self.batch_count += 1
        if self.handled_count >= self.expected_count:
            self.all_handled.set()
        return outcome


async def migrate_ledger_schema(database_url: str, schema: str) -> None:
    """Create `schema` with the ledger's migrations, as the launcher applies them."""
    await apply_migrations(
        database_url, schema, load_migrations(RUNTIME_MIGRATIONS, *SERVICE_MIGRATIONS["ledger"])
    )


async def project_through_ledger(
    settings: ServiceSettings, schema: str, expected_count: int, *, timeout_s: float
) -> ProjectionTiming:
    """Consume the settings' `payments.events` into `schema` through the ledger's live
    consumer path until `expected_count` records are handled, and time it.

    Raises TimeoutError when they are not all handled within `timeout_s`.
    """
    pool = await create_pool(
        settings.database_url,
        schema,
        size_max=settings.database_pool_size_max,
        command_timeout_s=settings.database_command_timeout_s,
    )
    broker = build_broker(settings, client_id=f"payrail-bench-{SERVICE_NAME}")
    await broker.connect()
    # The same handlers and consumer as wire_ledger and ServiceContext.consumer_loop.
    handlers, post_batch = payment_event_handlers(SystemClock())
    subscription = Subscription(
        Topic.PAYMENTS_EVENTS,
        f"{SERVICE_NAME}:{Topic.PAYMENTS_EVENTS.value}",
        handlers,
        batch_handler=post_batch,
    )
    by_topic = subscription_topics([subscription], settings.kafka_topic_prefix)
    group_id = f"{settings.kafka_topic_prefix}payrail.{SERVICE_NAME}"
    applier = _TimedApplier(
        expected_count=expected_count,
        group=group_id,
        pool=pool,
        subscriptions=by_topic,
        dead_letters=DeadLetterSink(
            pool,
            service=SERVICE_NAME,
            clock=SystemClock(),
            copier=DeadLetterPublisher(broker, settings.kafka_topic_prefix).copy,
        ),
        retry=RetryPolicy.from_settings(settings),
    )
    consumer = PartitionedConsumer.from_settings(
        settings, group_id=group_id, client_id=f"payrail-bench-{SERVICE_NAME}", applier=applier
    )
    running: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(consumer.start(), KAFKA_TIMEOUT_S)
        running = asyncio.create_task(consumer.run())
        done, _ = await asyncio.wait(
            [running, asyncio.create_task(applier.all_handled.wait())],
            timeout=timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if running in done:
            running.result()
        if not applier.all_handled.is_set():
            raise TimeoutError(
                f"{applier.handled_count}/{expected_count} events projected within {timeout_s} s"
            )
    finally:
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        await consumer.stop()
        await broker.stop()
        await pool.close()
    if applier.first_started_s is None or applier.last_committed_s is None:
        raise ProjectionMismatch("the consumer handled no record")
    return ProjectionTiming(
        elapsed_s=applier.last_committed_s - applier.first_started_s,
        in_consumer_s=applier.in_consumer_s,
        batch_count=applier.batch_count,
    )


async def check_projection(
    connection: asyncpg.Connection, schema: str, events: Sequence[Event]
) -> dict[str, int]:
    """Counts of what projection wrote in `schema`, after checking them against `events`:
    one entry, inbox row and JournalEntryPosted row per event, the postings the rules
    call for, and every balance equal to the sum of the events' postings.

    Raises ProjectionMismatch otherwise.
    """
    counts: dict[str, int] = {}
    for name, query in (
        ("journal_entries", f"SELECT count(*) FROM {schema}.journal_entries"),
        ("postings", f"SELECT count(*) FROM {schema}.postings"),
        ("inbox_rows", f"SELECT count(*) FROM {schema}.inbox"),
        (
            "outbox_rows",
            f"SELECT count(*) FROM {schema}.event_store WHERE message_type = 'JournalEntryPosted'",
        ),
    ):
        counts[name] = await connection.fetchval(query)
    expected_postings = sum(len(ENTRY_RULES[type(event)][1](event)) for event in events)
    expected = {
        "journal_entries": len(events),
        "postings": expected_postings,
        "inbox_rows": len(events),
        "outbox_rows": len(events),
    }
    if counts != expected:
        raise ProjectionMismatch(f"projected {counts}, the events call for {expected}")
    rows = await connection.fetch(
        f"SELECT account_id, currency, balance_minor FROM {schema}.account_balances"
    )
    projected: dict[AccountKey, int] = {
        (row["account_id"], row["currency"].strip()): row["balance_minor"] for row in rows
    }
    differences = balance_differences(projected, project_balances(events))
    if differences:
        raise ProjectionMismatch(f"{len(differences)} balances differ, first: {differences[0]}")
    counts["accounts"] = len(projected)
    return counts


async def read_journal(connection: asyncpg.Connection, schema: str) -> JournalRows:
    entries = await connection.fetch(
        f"SELECT {', '.join(ENTRY_COLUMNS)} FROM {schema}.journal_entries"
    )
    postings = await connection.fetch(f"SELECT {', '.join(POSTING_COLUMNS)} FROM {schema}.postings")
    return JournalRows(
        entries=[tuple(row) for row in entries], postings=[tuple(row) for row in postings]
    )


async def time_copy(
    connection: asyncpg.Connection, schema: str, journal: JournalRows, repeat_count: int
) -> list[float]:
    """Seconds of each of `repeat_count` COPYs of `journal` into empty unconstrained tables
    in `schema` (created here), both tables in one transaction, commit included."""
    await connection.execute(_UNCONSTRAINED_TABLES.format(schema=schema))
    durations_s: list[float] = []
    for _ in range(repeat_count):
        await connection.execute(f"TRUNCATE {schema}.journal_entries, {schema}.postings")
        begin = time.perf_counter()
        async with connection.transaction():
            await connection.copy_records_to_table(
                "journal_entries",
                records=journal.entries,
                columns=ENTRY_COLUMNS,
                schema_name=schema,
                timeout=KAFKA_TIMEOUT_S,
            )
            await connection.copy_records_to_table(
                "postings",
                records=journal.postings,
                columns=POSTING_COLUMNS,
                schema_name=schema,
                timeout=KAFKA_TIMEOUT_S,
            )
        durations_s.append(time.perf_counter() - begin)
    return durations_s


def summarise(
    events: Sequence[Event],
    counts: dict[str, int],
    projection: ProjectionTiming,
    copy_s: list[float],
) -> dict[str, Any]:
    """The figures of one run; the ratios compare events/s of both paths."""
    event_count = len(events)
    copy_rows = counts["journal_entries"] + counts["postings"]
    copy_s_median = statistics.median(copy_s)
    projection_rate = event_count / projection.elapsed_s
    copy_events_rate = counts["journal_entries"] / copy_s_median
    return {
        "path": PROJECTION_PATH,
        "events": event_count,
        "refunds": sum(isinstance(event, RefundSucceeded) for event in events),
        "merchants": len({event.merchant_id for event in events}),
        "accounts": counts["accounts"],
        "journal_entries": counts["journal_entries"],
        "postings": counts["postings"],
        "projection_s": round(projection.elapsed_s, 3),
        "projection_in_consumer_s": round(projection.in_consumer_s, 3),
        "projection_batches": projection.batch_count,
        "ledger_projection_events_per_s": round(projection_rate, 1),
        "copy_rows": copy_rows,
        "copy_repeat_count": len(copy_s),
        "copy_s_runs": [round(duration, 4) for duration in copy_s],
        "copy_s_median": round(copy_s_median, 4),
        "copy_events_per_s": round(copy_events_rate, 1),
        "copy_rows_per_s": round(copy_rows / copy_s_median, 1),
        "projection_over_copy_ratio": round(projection_rate / copy_events_rate, 5),
        "projection_x_slower_than_copy": round(copy_events_rate / projection_rate, 1),
    }


async def measure_ledger_projection(
    settings: ServiceSettings,
    event_count: int = EVENT_COUNT_DEFAULT,
    *,
    timeout_s: float = PROJECTION_TIMEOUT_S_DEFAULT,
    seed: int = 1,
) -> dict[str, Any]:
    """Project `event_count` synthetic events through the ledger's live consumer path and
    COPY the resulting rows (see the module docstring). Topics are made under a fresh
    prefix inside the settings' one; the scratch schemas are dropped at the end.

    Raises ProjectionMismatch when the projection is not what the events call for, and
    TimeoutError when it does not finish within `timeout_s`.
    """
    events = synthetic_events(event_count, seed)
    run_id = uuid.uuid4().hex[:8]
    run_settings = settings.model_copy(
        update={"kafka_topic_prefix": f"{settings.kafka_topic_prefix}projection{run_id}."}
    )
    ledger_schema, copy_schema = f"bench_ledger_{run_id}", f"bench_copy_{run_id}"
    topics = (Topic.PAYMENTS_EVENTS, Topic.DEAD_LETTERS)
    await create_topics(run_settings, topics)
    connection: asyncpg.Connection = await asyncpg.connect(settings.database_url, timeout=10.0)
    try:
        await produce_events(run_settings, events)
        await migrate_ledger_schema(settings.database_url, ledger_schema)
        await connection.execute(f"CREATE SCHEMA {copy_schema}")
        projection = await project_through_ledger(
            run_settings, ledger_schema, len(events), timeout_s=timeout_s
        )
        counts = await check_projection(connection, ledger_schema, events)
        journal = await read_journal(connection, ledger_schema)
        copy_s = await time_copy(connection, copy_schema, journal, COPY_REPEAT_COUNT)
    finally:
        for schema in (ledger_schema, copy_schema):
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await connection.close()
        await delete_topics(run_settings, topics)
    return summarise(events, counts, projection, copy_s)


def table_rows(result: dict[str, Any]) -> list[tuple[str, object]]:
    """The lines `make bench` prints for this measurement."""
    return [
        (
            "ledger replay events/s (kafka -> batch consumer -> post_events, 1 tx/batch)",
            result["ledger_projection_events_per_s"],
        ),
        (
            "raw COPY of the same rows, events/s (entries)",
            result["copy_events_per_s"],
        ),
        ("raw COPY of the same rows, rows/s (entries + postings)", result["copy_rows_per_s"]),
        (
            "ledger projection / COPY",
            f"{result['projection_over_copy_ratio']}"
            f" ({result['projection_x_slower_than_copy']}x slower)",
        ),
        (
            "ledger projection work",
            f"{result['events']} events ({result['refunds']} refunds), {result['postings']}"
            f" postings, {result['accounts']} balances checked",
        ),
    ]


@contextlib.contextmanager
def _infrastructure(state_dir: Path) -> Iterator[ServiceSettings]:
    """Settings for a run alone: the broker and database named by the environment, else
    an embedded broker and PostgreSQL on 127.0.0.1:5432 or an embedded pgserver."""
    with contextlib.ExitStack() as stack:
        overrides: dict[str, object] = {}
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            port = free_port()
            broker_log = stack.enter_context((state_dir / "broker.log").open("ab"))
            broker = start_embedded_broker(port, log_file=broker_log)
            stack.callback(stop_process, broker)
            overrides["kafka_bootstrap_servers"] = f"127.0.0.1:{port}"
            overrides["kafka_fetch_max_wait_ms"] = EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
        if not os.environ.get("DATABASE_URL"):
            if port_is_open("127.0.0.1", 5432):
                overrides["database_url"] = "postgresql://postgres@127.0.0.1:5432/postgres"
            else:
                dsn, postgres = start_embedded_postgres(state_dir / "pgdata")
                stack.callback(stop_embedded_postgres, postgres)
                overrides["database_url"] = dsn
        yield ServiceSettings(**overrides)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=EVENT_COUNT_DEFAULT)
    parser.add_argument("--timeout-s", type=float, default=PROJECTION_TIMEOUT_S_DEFAULT)
    arguments = parser.parse_args()
    if not 1 <= arguments.events <= EVENT_COUNT_MAX:
        parser.error(f"--events must be between 1 and {EVENT_COUNT_MAX}")
    state_dir = Path(tempfile.mkdtemp(prefix="payrail-bench-ledger-"))
    try:
        with (
            _infrastructure(state_dir) as settings,
            service_logging(state_dir / "ledger.log", SERVICE_NAME),
        ):
            print(f"Projecting {arguments.events} events through the ledger...", flush=True)
            result = asyncio.run(
                measure_ledger_projection(settings, arguments.events, timeout_s=arguments.timeout_s)
            )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    rows = table_rows(result)
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
