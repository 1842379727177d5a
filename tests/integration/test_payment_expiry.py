"""Unpaid payments expire on the injectable clock: payment_center in-process with a
fixed clock, against the real broker and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from faststream.kafka import KafkaBroker

from schemas import Topic, encode, new_command, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import CreatePayment, PaymentRequest
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.db import create_pool
from services.common.settings import ServiceSettings
from services.payment_center.app import create_app
from services.payment_center.handlers import expire_due_payments
from services.payment_center.settings import PaymentCenterSettings
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


async def stream_types(database_url: str, payment_id: str) -> list[str]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT message_type FROM payment_center.event_store"
            " WHERE stream_id = $1 ORDER BY stream_version",
            payment_id,
        )
        return [row["message_type"] for row in rows]
    finally:
        await connection.close()


async def test_an_unpaid_payment_expires_when_the_clock_passes_its_expiry(
    settings: ServiceSettings,
) -> None:
    clock = FixedClock(START)
    app = create_app(
        PaymentCenterSettings(**settings.model_dump(), expiry_poll_interval_ms=20), clock=clock
    )
    payment_id = f"pay_{uuid.uuid4().hex}"
    command = new_command(
        CreatePayment,
        PaymentRequest(
            order_id="order-expiry",
            amount_minor=1000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
            expires_at=START + timedelta(minutes=30),
        ),
        aggregate_id=payment_id,
        merchant_id="mch_expiry",
        producer="test",
        issued_at=START,
        correlation_id="corr-expiry",
        causation_id=None,
    )
    publisher: KafkaBroker = build_broker(settings, client_id="expiry-test")
    async with app.router.lifespan_context(app):
        await publisher.connect()
        try:
            await publisher.publish(
                encode(command),
                topic=topic_name(Topic.PAYMENTS_COMMANDS, settings.kafka_topic_prefix),
                key=payment_id.encode(),
            )
            await wait_until(
                lambda: stream_types_are(settings.database_url, payment_id, ["PaymentCreated"]),
                timeout_s=30,
                what="the payment to be created",
            )
            clock.advance(timedelta(minutes=30) - timedelta(microseconds=1))
            # Just before the expiry time a round finds nothing due.
            pool = await create_pool(settings.database_url, "payment_center")
            try:
                assert await expire_due_payments(pool, clock, 100) == 0
            finally:
                await pool.close()
            assert await stream_types(settings.database_url, payment_id) == ["PaymentCreated"]
            clock.advance(timedelta(microseconds=1))
            await wait_until(
                lambda: stream_types_are(
                    settings.database_url, payment_id, ["PaymentCreated", "PaymentExpired"]
                ),
                timeout_s=10,
                what="the payment to expire",
            )
        finally:
            await publisher.stop()
    connection = await asyncpg.connect(settings.database_url, timeout=10)
    try:
        assert (
            await connection.fetchval("SELECT count(*) FROM payment_center.payment_deadlines") == 0
        )
        correlation = await connection.fetchval(
            "SELECT correlation_id FROM payment_center.event_store"
            " WHERE message_type = 'PaymentExpired'"
        )
        assert correlation == "corr-expiry"
    finally:
        await connection.close()


async def stream_types_are(database_url: str, payment_id: str, types: list[str]) -> bool:
    return await stream_types(database_url, payment_id) == types
