"""A payment whose channel notification never arrives is found paid by querying the
channel, and succeeds once."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from services.common.launcher import PlatformInfo
from services.gateway.channels.alipay_protocol import LOSE_NOTIFICATIONS_MARKER
from tests.e2e.helpers import eventually, new_payment


async def channel_success_ids(database_url: str, payment_id: str) -> list[str]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT body->'payload'->>'notification_id' AS id FROM gateway.event_store"
            " WHERE stream_id = $1 AND message_type = 'ChannelPaymentSucceeded'",
            payment_id,
        )
        return [row["id"] for row in rows]
    finally:
        await connection.close()


def test_a_paid_payment_whose_notification_is_lost_succeeds_by_query(
    api: httpx.Client, info: PlatformInfo
) -> None:
    payment = api.post(
        "/v1/payments", json=new_payment(description=f"{LOSE_NOTIFICATIONS_MARKER} lost")
    ).json()
    assert payment["status"] == "requires_payment", payment
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200

    def succeeded() -> dict[str, object] | None:
        body: dict[str, object] = api.get(f"/v1/payments/{payment['id']}").json()
        return body if body["status"] == "succeeded" else None

    final = eventually(succeeded, what="the stuck payment to succeed by query")
    types = [event["type"] for event in final["events"]]  # type: ignore[attr-defined]
    assert types.count("PaymentSucceeded") == 1
    ids = asyncio.run(channel_success_ids(info.database_url, payment["id"]))
    assert ids and all(notification_id.startswith("query:") for notification_id in ids)
