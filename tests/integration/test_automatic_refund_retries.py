"""A refund payrail started by itself (money paid after the payment closed) that the
channel refuses is tried again on its schedule under new ids, and listed for operations,
waiting and then exhausted: payment_center in-process with a fixed clock, against the real
broker and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from faststream.kafka import KafkaBroker

from schemas import Event, Topic, encode, new_event, topic_name
from schemas.channels import ChannelPaymentSucceeded, ChannelPaymentSucceededPayload
from schemas.common import Channel, Failure, FeePlan
from schemas.payments import CancelPayment, CancelPaymentPayload, CreatePayment, PaymentRequest
from schemas.refunds import ChannelRefundFailed, ChannelRefundFailedPayload, derived_refund_id
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.payment_center.app import create_app
from services.payment_center.settings import PaymentCenterSettings
from tests.integration.test_payment_center_merchant_check import command_for
from tests.integration.test_payment_expiry import stream_types
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SCHEDULE_MS = [1_000, 2_000]  # three attempts in all


def channel_event(payment_id: str, event_type: type[Event], payload: object) -> Event:
    return new_event(
        event_type,
        payload,  # type: ignore[arg-type]
        aggregate_id=payment_id,
        aggregate_version=1,
        merchant_id="mch_owner",
        producer="gateway",
        occurred_at=START,
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


def refused(payment_id: str, refund_id: str) -> Event:
    return channel_event(
        payment_id,
        ChannelRefundFailed,
        ChannelRefundFailedPayload(
            refund_id=refund_id,
            channel=Channel.ALIPAY,
            failure=Failure(code="channel_refund_refused", message="not now"),
        ),
    )


async def test_a_refused_automatic_refund_is_retried_then_listed_as_exhausted(
    settings: ServiceSettings,
) -> None:
    clock = FixedClock(START)
    app = create_app(
        PaymentCenterSettings(
            **settings.model_dump(),
            expiry_poll_interval_ms=20,
            automatic_refund_retry_schedule_ms=SCHEDULE_MS,
        ),
        clock=clock,
    )
    payment_id = f"pay_{uuid.uuid4().hex}"
    first_refund = derived_refund_id(payment_id, "paid_after_close")
    prefix = settings.kafka_topic_prefix
    commands = topic_name(Topic.PAYMENTS_COMMANDS, prefix)
    results = topic_name(Topic.CHANNEL_RESULTS, prefix)
    publisher: KafkaBroker = build_broker(settings, client_id="refund-retry-test")

    async def send(message: object, topic: str) -> None:
        await publisher.publish(encode(message), topic=topic, key=payment_id.encode())  # type: ignore[arg-type]

    async def requested() -> list[str]:
        return [
            t
            for t in await stream_types(settings.database_url, payment_id)
            if t == "RefundRequested"
        ]

    async with app.router.lifespan_context(app):
        await publisher.connect()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://pc") as ops:

                async def listed() -> list[dict[str, object]]:
                    answer = await ops.get("/internal/v1/automatic_refunds")
                    assert answer.status_code == 200, answer.text
                    rows: list[dict[str, object]] = answer.json()
                    return [row for row in rows if row["payment_id"] == payment_id]

                await send(
                    command_for(
                        payment_id,
                        "mch_owner",
                        CreatePayment,
                        PaymentRequest(
                            order_id="order-refund-retry",
                            amount_minor=1000,
                            currency="CNY",
                            channel=Channel.ALIPAY,
                            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
                            expires_at=START + timedelta(minutes=30),
                        ),
                    ),
                    commands,
                )
                await send(
                    command_for(payment_id, "mch_owner", CancelPayment, CancelPaymentPayload()),
                    commands,
                )

                async def canceled() -> bool:
                    types = await stream_types(settings.database_url, payment_id)
                    return types == ["PaymentCreated", "PaymentCanceled"]

                # Topics are consumed side by side: the channel's result comes after.
                await wait_until(canceled, timeout_s=30, what="the payment to be canceled")
                await send(
                    channel_event(
                        payment_id,
                        ChannelPaymentSucceeded,
                        ChannelPaymentSucceededPayload(
                            channel=Channel.ALIPAY,
                            channel_trade_id="T-late",
                            amount_minor=1000,
                            currency="CNY",
                            paid_at=START,
                            notification_id="notify-late-1",
                        ),
                    ),
                    results,
                )

                async def owed() -> bool:
                    return len(await requested()) == 1

                await wait_until(owed, timeout_s=30, what="the late money to be owed back")
                refund_id = first_refund
                for attempt in (2, 3):
                    await send(refused(payment_id, refund_id), results)

                    async def waiting() -> bool:
                        rows = await listed()
                        return [row["status"] for row in rows] == ["waiting"]

                    await wait_until(waiting, timeout_s=30, what="the refusal to be listed")
                    # Not before its pause has passed.
                    assert len(await requested()) == attempt - 1
                    clock.advance(timedelta(milliseconds=SCHEDULE_MS[attempt - 2]))

                    async def retried(attempt: int = attempt) -> bool:
                        return len(await requested()) == attempt

                    await wait_until(retried, timeout_s=30, what=f"attempt {attempt}")
                    refund_id = f"{first_refund}_r{attempt}"
                # The third attempt is refused too: once its pause is over, the attempts
                # are used up and it stays listed for an operator.
                await send(refused(payment_id, refund_id), results)

                async def third_refusal_listed() -> bool:
                    rows = await listed()
                    return [row["refund_id"] for row in rows] == [refund_id]

                await wait_until(third_refusal_listed, timeout_s=30, what="the third refusal")
                clock.advance(timedelta(milliseconds=SCHEDULE_MS[-1]))

                async def exhausted() -> bool:
                    rows = await listed()
                    return [(row["refund_id"], row["status"]) for row in rows] == [
                        (refund_id, "exhausted")
                    ]

                await wait_until(exhausted, timeout_s=30, what="the refund listed as exhausted")
                clock.advance(timedelta(hours=1))
                assert len(await requested()) == 3
        finally:
            await publisher.stop()
