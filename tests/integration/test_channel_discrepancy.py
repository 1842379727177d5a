"""A channel result whose amount differs from the payment's is kept as a discrepancy for
operations, not applied and not dead-lettered: payment_center in-process against the real
broker and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from faststream.kafka import KafkaBroker

from schemas import Topic, encode, new_event, topic_name
from schemas.channels import ChannelPaymentSucceeded, ChannelPaymentSucceededPayload
from schemas.common import Channel, FeePlan
from schemas.payments import CreatePayment, PaymentRequest
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.payment_center.app import create_app
from services.payment_center.settings import PaymentCenterSettings
from tests.integration.test_payment_center_merchant_check import command_for
from tests.integration.test_payment_expiry import stream_types_are
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def paid(payment_id: str, amount_minor: int) -> ChannelPaymentSucceeded:
    return new_event(
        ChannelPaymentSucceeded,
        ChannelPaymentSucceededPayload(
            channel=Channel.ALIPAY,
            channel_trade_id="T-discrepancy",
            amount_minor=amount_minor,
            currency="CNY",
            paid_at=START,
            notification_id="notify-discrepancy-1",
        ),
        aggregate_id=payment_id,
        aggregate_version=1,
        merchant_id="mch_owner",
        producer="gateway",
        occurred_at=START,
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


async def discrepancies(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT body::text AS body FROM payment_center.event_store"
            " WHERE message_type = 'ChannelDiscrepancyRecorded'"
        )
        dead = await connection.fetchval("SELECT count(*) FROM payment_center.dead_letters")
        assert dead == 0, "a discrepancy must not be dead-lettered"
        return [row["body"] for row in rows]
    finally:
        await connection.close()


async def test_a_channel_amount_that_differs_is_recorded_once_as_a_discrepancy(
    settings: ServiceSettings,
) -> None:
    app = create_app(PaymentCenterSettings(**settings.model_dump()), clock=FixedClock(START))
    payment_id = f"pay_{uuid.uuid4().hex}"
    create = command_for(
        payment_id,
        "mch_owner",
        CreatePayment,
        PaymentRequest(
            order_id="order-discrepancy",
            amount_minor=1000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
            expires_at=START + timedelta(minutes=30),
        ),
    )
    publisher: KafkaBroker = build_broker(settings, client_id="discrepancy-test")
    async with app.router.lifespan_context(app):
        await publisher.connect()
        try:
            await publisher.publish(
                encode(create),
                topic=topic_name(Topic.PAYMENTS_COMMANDS, settings.kafka_topic_prefix),
                key=payment_id.encode(),
            )
            await wait_until(
                lambda: stream_types_are(settings.database_url, payment_id, ["PaymentCreated"]),
                timeout_s=30,
                what="the payment to be created",
            )
            results = topic_name(Topic.CHANNEL_RESULTS, settings.kafka_topic_prefix)
            # The channel says 999 was paid, and says it again (a re-published event).
            for _ in range(2):
                await publisher.publish(
                    encode(paid(payment_id, 999)), topic=results, key=payment_id.encode()
                )

            async def recorded() -> bool:
                return len(await discrepancies(settings.database_url)) == 1

            await wait_until(recorded, timeout_s=30, what="the discrepancy to be recorded")
            (body,) = await discrepancies(settings.database_url)
            assert '"expected_amount_minor":1000' in body.replace(" ", "")
            assert '"reported_amount_minor":999' in body.replace(" ", "")
            # The payment is not moved by a result that contradicts it.
            assert await stream_types_are(settings.database_url, payment_id, ["PaymentCreated"])
        finally:
            await publisher.stop()
