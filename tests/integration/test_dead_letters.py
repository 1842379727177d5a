"""Dead letters an operator can act on, on a real PostgreSQL: parked with the reason,
listed and shown by `payrail dead-letters`, and redriven through the consumer's inbox once
the cause is fixed, applying exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import pytest

from schemas import Topic, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import PaymentCreated, PaymentRequest
from services.common import dead_letters_cli
from services.common.clock import SystemClock
from services.common.consumer import BatchApplier, Subscription
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.dead_letters import DeadLetterSink
from services.common.invariant import InvariantViolation
from services.common.settings import ServiceSettings

pytestmark = pytest.mark.integration

# One of the service schemas the command looks in.
SCHEMA = "ledger"
INBOX_NAME = "ledger:payments.events"


@dataclass
class InboundRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=list)


@pytest.fixture
async def pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(
        settings.database_url, SCHEMA, load_migrations("services.common.migrations")
    )
    pool = await create_pool(settings.database_url, SCHEMA)
    await pool.execute("CREATE TABLE effects (message_id uuid NOT NULL)")
    yield pool
    await pool.close()


def created() -> PaymentCreated:
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_event(
        PaymentCreated,
        PaymentRequest(
            order_id="order-1",
            amount_minor=1000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
        ),
        aggregate_id=payment_id,
        aggregate_version=1,
        merchant_id="mch_test",
        producer="test",
        occurred_at=datetime.now(UTC),
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


async def test_a_parked_message_is_listed_shown_and_redriven_once_after_the_fix(
    pool: asyncpg.Pool, settings: ServiceSettings
) -> None:
    fixed = False

    async def apply_effect(connection: asyncpg.Connection, event: PaymentCreated) -> None:
        if not fixed:
            raise InvariantViolation("amount rule not deployed yet")
        await connection.execute("INSERT INTO effects (message_id) VALUES ($1)", event.event_id)

    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    applier = BatchApplier(
        group="dead-letter-test",
        pool=pool,
        subscriptions={
            topic: Subscription(Topic.PAYMENTS_EVENTS, INBOX_NAME, {PaymentCreated: apply_effect})
        },
        dead_letters=DeadLetterSink(pool, service=SCHEMA, clock=SystemClock()),
    )
    event = created()
    body = event.model_dump_json().encode()
    outcome = await applier.apply([InboundRecord(topic, 3, 41, b"k", body)])
    assert (outcome.applied, outcome.dead_lettered) == (0, 1)
    # The same record redelivered is the same dead letter seen twice.
    await applier.apply([InboundRecord(topic, 3, 41, b"k", body)])
    letters = await pool.fetch("SELECT dead_letter_id, seen_count, status FROM dead_letters")
    assert [(row["seen_count"], row["status"]) for row in letters] == [(2, "parked")]
    dead_letter_id = letters[0]["dead_letter_id"]

    listing = io.StringIO()
    assert await dead_letters_cli.list_all(settings.database_url, 10, listing) == 0
    assert str(dead_letter_id) in listing.getvalue()
    assert "amount rule not deployed yet" in listing.getvalue()
    shown = io.StringIO()
    assert await dead_letters_cli.show(settings.database_url, dead_letter_id, shown) == 0
    document = json.loads(shown.getvalue())
    assert document["service"] == SCHEMA
    assert document["body"]["event_id"] == str(event.event_id)
    assert document["source"] == {"topic": topic, "partition": 3, "offset": 41}

    # Redriving before the fix parks it again, with the reason.
    async def service_redrive_loop() -> None:
        while True:
            await applier.redrive_requested()
            await asyncio.sleep(0.05)

    loop = asyncio.create_task(service_redrive_loop())
    try:
        again = io.StringIO()
        assert await dead_letters_cli.redrive(settings.database_url, None, 20, again) == 1
        assert "parked again: InvariantViolation: amount rule not deployed yet" in again.getvalue()
        assert await pool.fetchval("SELECT count(*) FROM effects") == 0

        fixed = True
        redriven = io.StringIO()
        assert (
            await dead_letters_cli.redrive(settings.database_url, dead_letter_id, 20, redriven) == 0
        ), redriven.getvalue()
        assert f"{dead_letter_id}  redriven" in redriven.getvalue()
        # Once redriven, it is not redriven again, and a late redelivery of the original
        # record finds the inbox row.
        refused = io.StringIO()
        assert (
            await dead_letters_cli.redrive(settings.database_url, dead_letter_id, 5, refused) == 1
        )
        assert "only a parked letter is redriven" in refused.getvalue()
        late = await applier.apply([InboundRecord(topic, 3, 41, b"k", body)])
        assert (late.applied, late.duplicate, late.dead_lettered) == (0, 1, 0)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert await pool.fetchval("SELECT count(*) FROM effects") == 1
    row = await pool.fetchrow("SELECT status, redrive_count FROM dead_letters")
    assert row is not None
    assert (row["status"], row["redrive_count"]) == ("redriven", 2)


async def test_redrive_without_a_running_service_says_so(
    pool: asyncpg.Pool, settings: ServiceSettings
) -> None:
    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    applier = BatchApplier(
        group="dead-letter-test",
        pool=pool,
        subscriptions={
            topic: Subscription(Topic.PAYMENTS_EVENTS, INBOX_NAME, {PaymentCreated: _refuse})
        },
        dead_letters=DeadLetterSink(pool, service=SCHEMA, clock=SystemClock()),
    )
    await applier.apply([InboundRecord(topic, 0, 1, None, b"{not json")])
    out = io.StringIO()
    assert await dead_letters_cli.redrive(settings.database_url, None, 0.5, out) == 1
    assert "still waiting: is its service running?" in out.getvalue()


async def _refuse(connection: asyncpg.Connection, event: PaymentCreated) -> None:
    raise InvariantViolation("never")
