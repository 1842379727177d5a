"""payment_center refuses a command that names another merchant than the payment's: a
forged cancel on the bus is dead-lettered with the reason and the payment is untouched,
while the same cancel from the payment's merchant applies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from faststream.kafka import KafkaBroker

from schemas import Command, Topic, encode, new_command, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import CancelPayment, CancelPaymentPayload, CreatePayment, PaymentRequest
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.payment_center.app import create_app
from services.payment_center.settings import PaymentCenterSettings
from tests.integration.test_payment_expiry import stream_types, stream_types_are
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
OWNER = "mch_owner"
INTRUDER = "mch_intruder"


def command_for(payment_id: str, merchant_id: str, cls: type[Command], payload: object) -> Command:
    return new_command(
        cls,
        payload,  # type: ignore[arg-type]
        aggregate_id=payment_id,
        merchant_id=merchant_id,
        producer="test",
        issued_at=START,
        correlation_id=f"corr-{uuid.uuid4().hex[:8]}",
        causation_id=None,
    )


async def dead_letter_reasons(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch("SELECT reason FROM payment_center.dead_letters")
        return [row["reason"] for row in rows]
    finally:
        await connection.close()


async def test_a_cancel_from_another_merchant_is_dead_lettered_and_changes_nothing(
    settings: ServiceSettings,
) -> None:
    app = create_app(PaymentCenterSettings(**settings.model_dump()), clock=FixedClock(START))
    payment_id = f"pay_{uuid.uuid4().hex}"
    create = command_for(
        payment_id,
        OWNER,
        CreatePayment,
        PaymentRequest(
            order_id="order-merchant-check",
            amount_minor=1000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
            expires_at=START + timedelta(minutes=30),
        ),
    )
    topic = topic_name(Topic.PAYMENTS_COMMANDS, settings.kafka_topic_prefix)
    publisher: KafkaBroker = build_broker(settings, client_id="merchant-check-test")
    async with app.router.lifespan_context(app):
        await publisher.connect()
        try:
            await publisher.publish(encode(create), topic=topic, key=payment_id.encode())
            await wait_until(
                lambda: stream_types_are(settings.database_url, payment_id, ["PaymentCreated"]),
                timeout_s=30,
                what="the payment to be created",
            )
            forged = command_for(payment_id, INTRUDER, CancelPayment, CancelPaymentPayload())
            await publisher.publish(encode(forged), topic=topic, key=payment_id.encode())

            async def refused() -> bool:
                return any(
                    "merchant_mismatch" in reason or "mch_intruder" in reason
                    for reason in await dead_letter_reasons(settings.database_url)
                )

            await wait_until(refused, timeout_s=30, what="the forged cancel to be dead-lettered")
            assert await stream_types(settings.database_url, payment_id) == ["PaymentCreated"]

            genuine = command_for(payment_id, OWNER, CancelPayment, CancelPaymentPayload())
            await publisher.publish(encode(genuine), topic=topic, key=payment_id.encode())
            await wait_until(
                lambda: stream_types_are(
                    settings.database_url, payment_id, ["PaymentCreated", "PaymentCanceled"]
                ),
                timeout_s=30,
                what="the owner's cancel to apply",
            )
        finally:
            await publisher.stop()
    assert len(await dead_letter_reasons(settings.database_url)) == 1
