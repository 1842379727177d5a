"""Upstream order systems publish orders on the `orders` topic; each order gets exactly
the payment an HTTP request would create."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer, ConsumerRecord

from schemas import Event, Topic, encode, new_event, topic_name
from schemas.orders import OrderCancelled, OrderPlaced, order_payment_id
from services.common.launcher import PlatformInfo
from tests.e2e.helpers import eventually
from tests.support.kafka import read_topic

MERCHANT = "mch_demo"


def order_event(
    cls: type[Event], payload: dict[str, Any], order_id: str, merchant_id: str = MERCHANT
) -> Event:
    return new_event(
        cls,
        payload,
        aggregate_id=order_id,
        aggregate_version=1 if cls is OrderPlaced else 2,
        merchant_id=merchant_id,
        producer="shop-orders",
        occurred_at=datetime.now(UTC),
        correlation_id=f"corr-{order_id}",
        causation_id=None,
    )


def publish(info: PlatformInfo, platform: Any, *bodies: bytes) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=info.kafka_bootstrap_servers)
        await producer.start()
        try:
            for body in bodies:
                await producer.send_and_wait(
                    topic_name(Topic.ORDERS, platform.service_settings.kafka_topic_prefix),
                    body,
                    key=b"order",
                )
        finally:
            await producer.stop()

    asyncio.run(send())


def placed(
    order_id: str, amount_minor: int = 2599, channel: str = "alipay", merchant_id: str = MERCHANT
) -> Event:
    return order_event(
        OrderPlaced,
        {"order_id": order_id, "amount_minor": amount_minor, "currency": "CNY", "channel": channel},
        order_id,
        merchant_id,
    )


def test_an_order_placed_twice_creates_one_payment_and_can_be_cancelled(
    api: httpx.Client, info: PlatformInfo, platform: Any
) -> None:
    order_id = f"order-{uuid.uuid4().hex[:10]}"
    # The same order published twice, as two events: one payment.
    publish(info, platform, encode(placed(order_id)), encode(placed(order_id)))
    payment_id = order_payment_id(MERCHANT, order_id)

    def payable() -> dict[str, Any] | None:
        answer = api.get(f"/v1/payments/{payment_id}")
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 and body["status"] == "requires_payment" else None

    payment = eventually(payable, what="the order's payment")
    assert payment["amount"] == 2599 and payment["order_id"] == order_id
    listed = api.get("/v1/payments", params={"order_id": order_id}).json()["data"]
    assert [p["id"] for p in listed] == [payment_id]

    cancelled = order_event(
        OrderCancelled, {"order_id": order_id, "reason": "shopper_cancelled"}, order_id
    )
    publish(info, platform, encode(cancelled))
    eventually(
        lambda: api.get(f"/v1/payments/{payment_id}").json()["status"] == "canceled",
        what="the order's payment canceled",
    )


def test_an_order_the_merchant_cannot_take_is_dead_lettered_with_the_reason(
    info: PlatformInfo, platform: Any
) -> None:
    order_id = f"order-{uuid.uuid4().hex[:10]}"
    refused = placed(order_id, merchant_id="mch_nobody")
    publish(info, platform, encode(refused))

    def dead_letter() -> list[ConsumerRecord]:
        return asyncio.run(
            read_topic(
                info.kafka_bootstrap_servers,
                topic_name(Topic.DEAD_LETTERS, platform.service_settings.kafka_topic_prefix),
                until=lambda seen: any(r.value == encode(refused) for r in seen),
                timeout_s=20,
            )
        )

    records = [r for r in dead_letter() if r.value == encode(refused)]
    assert len(records) == 1
    reason = dict(records[0].headers)["dead_letter_reason"].decode()
    assert "merchant_not_found" in reason


def test_a_cancelled_paid_order_is_refunded_by_the_merchants_policy(
    api: httpx.Client, info: PlatformInfo, platform: Any
) -> None:
    order_id = f"order-{uuid.uuid4().hex[:10]}"
    payment_id = order_payment_id(MERCHANT, order_id)
    publish(info, platform, encode(placed(order_id, amount_minor=1500)))
    payment = eventually(
        lambda: (p := api.get(f"/v1/payments/{payment_id}").json()).get("next_action") and p,
        what="the order's payment waiting for the payer",
    )
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
    eventually(
        lambda: api.get(f"/v1/payments/{payment_id}").json()["status"] == "succeeded",
        what="the order's payment succeeded",
    )
    cancelled = order_event(
        OrderCancelled, {"order_id": order_id, "reason": "shopper_returned"}, order_id
    )
    publish(info, platform, encode(cancelled), encode(cancelled))

    def refunded() -> dict[str, Any] | None:
        detail = api.get(f"/v1/payments/{payment_id}").json()
        return detail if detail["amount_refunded"] == 1500 else None

    detail = eventually(refunded, what="the paid order refunded")
    assert detail["status"] == "succeeded"
    (refund,) = detail["refunds"]
    assert (refund["amount"], refund["status"], refund["initiator"]) == (
        1500,
        "succeeded",
        "order_cancelled",
    )
