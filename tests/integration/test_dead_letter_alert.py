"""Parking a dead letter announces it: against a real PostgreSQL schema, a new letter's row
and its `DeadLetterRecorded` event commit in one transaction, a letter seen again
announces nothing, and a letter that cannot be announced is not parked either."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pydantic
import pytest

from schemas import Topic, decode
from schemas.operations import DEAD_LETTER_REASON_LENGTH_MAX, DeadLetterRecorded
from services.common.clock import FixedClock
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.dead_letters import DeadLetter, DeadLetterSink

pytestmark = pytest.mark.integration

SCHEMA = "dead_letter_alert_test"
CONSUMER = "dead_letter_alert_test:payments.events"
STARTED_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(database_url, SCHEMA, load_migrations("services.common.migrations"))
    pool = await create_pool(database_url, SCHEMA, size_max=2)
    yield pool
    await pool.close()


def sink(pool: asyncpg.Pool, service: str = SCHEMA) -> DeadLetterSink:
    return DeadLetterSink(pool, service=service, clock=FixedClock(STARTED_AT))


def letter(
    *,
    body: bytes | None = None,
    consumer: str = CONSUMER,
    source_topic: str = "t1.payments.events",
    reason: str = "InvariantViolation: the payment belongs to another merchant",
) -> DeadLetter:
    return DeadLetter(
        consumer=consumer,
        source_topic=source_topic,
        source_partition=2,
        source_offset=41,
        message_key=b"pay_1",
        body=body if body is not None else f'{{"poison": "{uuid.uuid4().hex}"}}'.encode(),
        reason=reason,
        message_id=uuid.uuid4(),
        message_type="PaymentCreated",
    )


async def announcements(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT topic, message_type, message_key, stream_id, stream_version, merchant_id,"
        " xmin::text AS written_in, body::text AS body, published_at"
        " FROM event_store ORDER BY position"
    )


async def test_a_new_dead_letter_and_its_announcement_commit_together(
    pool: asyncpg.Pool,
) -> None:
    parked = letter(reason="x" * (DEAD_LETTER_REASON_LENGTH_MAX * 3))

    await sink(pool).park([parked])

    row = await pool.fetchrow(
        "SELECT dead_letter_id, reason, xmin::text AS written_in FROM dead_letters"
    )
    assert row is not None
    assert row["reason"] == parked.reason  # The row keeps the whole reason.
    (stored,) = await announcements(pool)
    assert stored["written_in"] == row["written_in"]  # One transaction wrote both.
    assert stored["published_at"] is None  # Left to the relay, after the commit.
    aggregate_id = f"dl_{row['dead_letter_id'].hex}"
    assert (stored["topic"], stored["message_type"]) == (
        Topic.OPERATIONS_EVENTS.value,
        "DeadLetterRecorded",
    )
    assert (stored["message_key"], stored["stream_id"], stored["stream_version"]) == (
        aggregate_id,
        aggregate_id,
        1,
    )
    assert stored["merchant_id"] == "platform"
    event = decode(Topic.OPERATIONS_EVENTS, stored["body"].encode())
    assert isinstance(event, DeadLetterRecorded)
    assert (event.producer, event.occurred_at) == (SCHEMA, STARTED_AT)
    assert event.causation_id == str(parked.message_id)
    payload = event.payload
    assert payload.dead_letter_id == row["dead_letter_id"]
    assert (payload.service, payload.consumer) == (SCHEMA, CONSUMER)
    assert (payload.source_topic, payload.source_partition, payload.source_offset) == (
        "t1.payments.events",
        2,
        41,
    )
    assert (payload.message_id, payload.message_type) == (parked.message_id, "PaymentCreated")
    assert payload.reason == "x" * DEAD_LETTER_REASON_LENGTH_MAX


async def test_the_same_body_parked_again_for_the_same_consumer_announces_nothing_new(
    pool: asyncpg.Pool,
) -> None:
    body = b'{"event_type": "PaymentCreated", "broken": true}'

    await sink(pool).park([letter(body=body)])
    # Redelivered, once on its own and twice within one batch.
    await sink(pool).park([letter(body=body)])
    await sink(pool).park([letter(body=body), letter(body=body)])

    assert await pool.fetchval("SELECT seen_count FROM dead_letters") == 4
    assert len(await announcements(pool)) == 1

    # Another consumer failing on the same body has a letter, and an alert, of its own.
    await sink(pool).park([letter(body=body, consumer="dead_letter_alert_test:orders")])
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 2
    assert len(await announcements(pool)) == 2


async def test_a_letter_that_cannot_be_announced_is_not_parked_either(
    pool: asyncpg.Pool,
) -> None:
    # A service name longer than a schema name can be breaks the event's contract.
    with pytest.raises(pydantic.ValidationError):
        await sink(pool, service="s" * 64).park([letter(), letter()])

    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert await announcements(pool) == []


async def test_a_letter_parked_from_the_operations_topic_is_not_announced(
    pool: asyncpg.Pool,
) -> None:
    await sink(pool).park(
        [
            letter(
                consumer="dead_letter_alert_test:operations.events",
                source_topic=f"t1.{Topic.OPERATIONS_EVENTS.value}",
            )
        ]
    )

    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1
    assert await announcements(pool) == []
