"""The ledger against a real broker and a real PostgreSQL: one balanced entry per
successful payment, exactly once, with balances, an outbox event and database-enforced
balance and immutability."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from schemas import Topic, decode, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.ledger import JournalEntryPosted
from schemas.payments import PaymentSucceeded, PaymentSucceededPayload
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.db import apply_migrations, load_migrations
from services.common.settings import ServiceSettings
from services.ledger.app import create_app
from services.ledger.domain import entry_id_for
from services.ledger.handlers import post_event
from services.ledger.settings import LedgerSettings
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration

SCHEMA = "ledger"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WAIT_S_MAX = 30.0


def payment_succeeded(
    *, merchant_id: str, amount_minor: int, fee_plan: FeePlan, currency: str = "CNY"
) -> PaymentSucceeded:
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_event(
        PaymentSucceeded,
        PaymentSucceededPayload(
            order_id=f"order-{uuid.uuid4().hex[:8]}",
            amount_minor=amount_minor,
            currency=currency,
            channel=Channel.ALIPAY,
            fee_plan=fee_plan,
            channel_trade_id=f"trade-{uuid.uuid4().hex[:8]}",
            paid_at=NOW,
        ),
        aggregate_id=payment_id,
        aggregate_version=4,
        merchant_id=merchant_id,
        producer="payment_center",
        occurred_at=NOW,
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; fail after WAIT_S_MAX seconds."""
    deadline = time.monotonic() + WAIT_S_MAX
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_S_MAX}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def connection(settings: ServiceSettings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the ledger's migrated schema, without the service running."""
    await apply_migrations(
        settings.database_url,
        SCHEMA,
        load_migrations("services.common.migrations", "services.ledger.migrations"),
    )
    opened: asyncpg.Connection = await asyncpg.connect(
        settings.database_url, timeout=10, server_settings={"search_path": f"{SCHEMA},public"}
    )
    yield opened
    await opened.close()


async def test_successful_payment_is_posted_once_balanced_and_announced(
    settings: ServiceSettings,
) -> None:
    ledger_settings = LedgerSettings(**settings.model_dump())
    app = create_app(ledger_settings, clock=FixedClock(NOW))
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    other_merchant = f"mch_{uuid.uuid4().hex[:10]}"
    # G = 12_345, F = 30 + round_half_even(308.625) = 339.
    event = payment_succeeded(
        merchant_id=merchant,
        amount_minor=12_345,
        fee_plan=FeePlan(basis_points=250, fixed_minor=30),
    )
    # G = 1_000, F = round_half_even(2.5) = 2 (a tie, rounded to even).
    later = payment_succeeded(
        merchant_id=other_merchant,
        amount_minor=1_000,
        fee_plan=FeePlan(basis_points=25, fixed_minor=0),
    )
    payments_topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    # Every record shares one key, hence one partition: once the later payment is posted,
    # the duplicate and the malformed record before it have been consumed too.
    key = event.aggregate_id.encode()

    async with app.router.lifespan_context(app):
        pool: asyncpg.Pool = app.state.context.pool
        producer = build_broker(settings, client_id="ledger-test-producer")
        await producer.connect()
        try:
            body = event.model_dump_json().encode()
            await producer.publish(body, topic=payments_topic, key=key)
            await producer.publish(
                b'{"event_type": "PaymentSucceeded"}', topic=payments_topic, key=key
            )
            await producer.publish(body, topic=payments_topic, key=key)  # redelivered
            await producer.publish(later.model_dump_json().encode(), topic=payments_topic, key=key)
        finally:
            await producer.stop()

        async def both_posted() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM journal_entries")
            return bool(count == 2)

        await wait_until(both_posted, "both payments to be posted")
        # The redelivered event was stopped by the inbox, before the journal's own guard.
        assert await pool.fetchval("SELECT count(*) FROM inbox") == 2

        entries = await pool.fetch(
            "SELECT entry_id, kind, merchant_id, occurred_at FROM journal_entries"
            " WHERE source_event_id = $1",
            event.event_id,
        )
        assert [dict(entry) for entry in entries] == [
            {
                "entry_id": entry_id_for(event.event_id),
                "kind": "payment_succeeded",
                "merchant_id": merchant,
                "occurred_at": NOW,
            }
        ]
        balances = {
            (row["account_id"], row["currency"]): row["balance_minor"]
            for row in await pool.fetch("SELECT * FROM account_balances")
        }
        assert balances == {
            ("platform:channel_receivable:alipay", "CNY"): 12_345 + 1_000,
            (f"merchant:{merchant}:pending", "CNY"): -(12_345 - 339),
            (f"merchant:{other_merchant}:pending", "CNY"): -(1_000 - 2),
            ("platform:fee_revenue", "CNY"): -(339 + 2),
        }
        assert sum(balances.values()) == 0
        per_currency_totals = await pool.fetch(
            "SELECT currency, sum(balance_minor) AS total FROM account_balances GROUP BY currency"
        )
        assert [(row["currency"], row["total"]) for row in per_currency_totals] == [("CNY", 0)]

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ledger", timeout=10
        ) as client:
            response = await client.get(
                "/internal/v1/balances", params={"account_prefix": f"merchant:{merchant}:"}
            )
        assert response.status_code == 200
        assert response.json() == [
            {
                "account_id": f"merchant:{merchant}:pending",
                "currency": "CNY",
                "balance_minor": -12_006,
            }
        ]

        async def outbox_drained() -> bool:
            unpublished = await pool.fetchval(
                "SELECT count(*) FROM event_store WHERE published_at IS NULL"
            )
            return bool(unpublished == 0)

        await wait_until(outbox_drained, "the relay to publish the ledger's events")
        rows = await pool.fetch(
            "SELECT message_type, count(*) AS n FROM event_store GROUP BY 1 ORDER BY 1"
        )
        # The malformed record is parked, and its dead letter announced to operations.
        assert [(row["message_type"], row["n"]) for row in rows] == [
            ("DeadLetterRecorded", 1),
            ("JournalEntryPosted", 2),
        ]

    ledger_records = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.LEDGER_EVENTS, settings.kafka_topic_prefix),
        until=lambda seen: len(seen) >= 2,
    )
    posted = [decode(Topic.LEDGER_EVENTS, record.value) for record in ledger_records]
    assert len(posted) == 2
    ours = [
        message
        for message in posted
        if isinstance(message, JournalEntryPosted)
        and message.payload.source_event_id == str(event.event_id)
    ]
    assert len(ours) == 1
    announced = ours[0]
    assert announced.producer == "ledger"
    assert announced.aggregate_id == entry_id_for(event.event_id)
    assert announced.aggregate_version == 1
    assert announced.merchant_id == merchant
    assert announced.correlation_id == event.correlation_id
    assert announced.causation_id == str(event.event_id)
    assert announced.occurred_at == NOW
    assert announced.payload.source_aggregate_id == event.aggregate_id
    assert [
        (posting.account_id, posting.currency, posting.amount_minor)
        for posting in announced.payload.postings
    ] == [
        ("platform:channel_receivable:alipay", "CNY", 12_345),
        (f"merchant:{merchant}:pending", "CNY", -12_006),
        ("platform:fee_revenue", "CNY", -339),
    ]

    dead_letters = await read_topic(
        settings.kafka_bootstrap_servers,
        topic_name(Topic.DEAD_LETTERS, settings.kafka_topic_prefix),
        until=lambda seen: len(seen) >= 1,
    )
    assert [record.value for record in dead_letters] == [b'{"event_type": "PaymentSucceeded"}']


async def test_posting_the_same_event_again_writes_nothing(connection: asyncpg.Connection) -> None:
    # The inbox de-duplicates per consumer; the journal's unique source event id is the
    # second guard (a replay under another consumer name, a rebuild).
    event = payment_succeeded(
        merchant_id=f"mch_{uuid.uuid4().hex[:10]}",
        amount_minor=10_000,
        fee_plan=FeePlan(basis_points=60, fixed_minor=0),
    )
    clock = FixedClock(NOW)
    for expected in (entry_id_for(event.event_id), None):
        async with connection.transaction():
            assert await post_event(connection, event, clock=clock) == expected
    assert await connection.fetchval("SELECT count(*) FROM postings") == 3
    assert await connection.fetchval("SELECT count(*) FROM event_store") == 1
    assert (
        await connection.fetchval(
            "SELECT balance_minor FROM account_balances WHERE account_id = 'platform:fee_revenue'"
        )
        == -60
    )


async def insert_entry(connection: asyncpg.Connection, lines: list[tuple[str, str, int]]) -> str:
    entry_id = f"je_test_{uuid.uuid4().hex}"
    await connection.execute(
        "INSERT INTO journal_entries (entry_id, source_event_id, kind, merchant_id, occurred_at)"
        " VALUES ($1, $2, 'test', 'mch_test', now())",
        entry_id,
        uuid.uuid4(),
    )
    if lines:
        # One statement, as the ledger writes postings: the balance of every entry it
        # touched is checked at the end of the statement.
        await connection.execute(
            "INSERT INTO postings (entry_id, line, account_id, currency, amount_minor)"
            " SELECT $1, line, account_id, currency, amount_minor"
            " FROM unnest($2::smallint[], $3::text[], $4::text[], $5::bigint[])"
            " AS l(line, account_id, currency, amount_minor)",
            entry_id,
            list(range(1, len(lines) + 1)),
            [account_id for account_id, _, _ in lines],
            [currency for _, currency, _ in lines],
            [amount_minor for _, _, amount_minor in lines],
        )
    return entry_id


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param(
            [("a", "CNY", 100), ("b", "CNY", -90)], "CNY postings sum to 10", id="off-by-ten"
        ),
        pytest.param(
            [("a", "CNY", 100), ("b", "USD", -100)],
            "CNY postings sum to 100",
            id="balanced-overall-not-per-currency",
        ),
        pytest.param([("a", "CNY", 100)], "has 1 posting", id="one-line"),
        pytest.param([], "has 0 posting", id="no-lines"),
    ],
)
async def test_database_refuses_an_unbalanced_entry(
    connection: asyncpg.Connection, lines: list[tuple[str, str, int]], message: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match=message):
        async with connection.transaction():
            # Postings are checked per statement; an entry without any, at commit.
            await insert_entry(connection, lines)
    assert await connection.fetchval("SELECT count(*) FROM journal_entries") == 0


async def test_postings_added_later_to_a_balanced_entry_are_checked_too(
    connection: asyncpg.Connection,
) -> None:
    async with connection.transaction():
        entry_id = await insert_entry(connection, [("a", "CNY", 100), ("b", "CNY", -100)])
    with pytest.raises(asyncpg.CheckViolationError, match="CNY postings sum to 5"):
        await connection.execute(
            "INSERT INTO postings (entry_id, line, account_id, currency, amount_minor)"
            " VALUES ($1, 3, 'c', 'CNY', 5)",
            entry_id,
        )
    assert await connection.fetchval("SELECT count(*) FROM postings") == 2


async def test_journal_rows_are_append_only(connection: asyncpg.Connection) -> None:
    async with connection.transaction():
        entry_id = await insert_entry(connection, [("a", "CNY", 100), ("b", "CNY", -100)])
    for statement in (
        "UPDATE postings SET amount_minor = 5 WHERE entry_id = $1",
        "DELETE FROM postings WHERE entry_id = $1",
        "UPDATE journal_entries SET kind = 'edited' WHERE entry_id = $1",
        "DELETE FROM journal_entries WHERE entry_id = $1",
    ):
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await connection.execute(statement, entry_id)
    for table in ("postings", "journal_entries"):
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await connection.execute(f"TRUNCATE {table} CASCADE")
    assert await connection.fetchval("SELECT count(*) FROM postings") == 2
