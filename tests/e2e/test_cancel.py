"""Canceling unpaid payments: the channel trade is closed, the merchant is told."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import (
    eventually,
    ledger_balance,
    new_payment,
    signed_channel_notification,
)


def test_canceling_an_unpaid_payment_closes_its_trade(
    api: httpx.Client, info: PlatformInfo
) -> None:
    payment = api.post("/v1/payments", json=new_payment()).json()
    assert payment["status"] == "requires_payment", payment
    canceled = api.post(f"/v1/payments/{payment['id']}/cancel", json={"reason": "customer_left"})
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["next_action"] is None

    def trade_closed() -> bool:
        # Asked as the connector would ask, not by paying: a payer's attempt before the
        # close would pay the trade (and be refunded), which is another test.
        answer = httpx.get(
            f"{info.psp_base_url}/alipay/v1/trades/{payment['id']}",
            params={"app_id": "payrail_platform"},
            timeout=5,
        ).json()
        return bool(answer.get("trade_status") == "TRADE_CLOSED")

    eventually(trade_closed, what="the channel trade to be closed")
    # The payer can no longer pay.
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 409
    again = api.post(f"/v1/payments/{payment['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "canceled"

    detail = api.get(f"/v1/payments/{payment['id']}").json()
    assert [event["type"] for event in detail["events"]][-1] == "PaymentCanceled"

    def canceled_event() -> dict[str, Any] | None:
        events = api.get("/v1/events", params={"type": "payment.canceled", "limit": 100}).json()
        return next((e for e in events["data"] if e["data"]["object"]["id"] == payment["id"]), None)

    assert eventually(canceled_event, what="payment.canceled")["data"]["object"]["status"] == (
        "canceled"
    )


def test_a_paid_payment_cannot_be_canceled(api: httpx.Client) -> None:
    payment = api.post("/v1/payments", json=new_payment()).json()
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
    eventually(
        lambda: api.get(f"/v1/payments/{payment['id']}").json()["status"] == "succeeded",
        what="payment succeeded",
    )
    refused = api.post(f"/v1/payments/{payment['id']}/cancel")
    assert refused.status_code == 409
    assert refused.json()["code"] == "payment_not_cancelable"
    assert api.post("/v1/payments/pay_nobody/cancel").json()["code"] == "payment_not_found"


def test_money_paid_after_a_cancel_is_recorded_once_as_owed_back(
    api: httpx.Client, info: PlatformInfo, platform: Any
) -> None:
    clearing_before = ledger_balance(platform, "platform:refunds_clearing")
    payment = api.post("/v1/payments", json=new_payment(amount=777)).json()
    assert api.post(f"/v1/payments/{payment['id']}/cancel").json()["status"] == "canceled"
    notify_url = f"{info.connector_base_url}/v1/channels/alipay/notify"
    # The payer paid just before the trade closed: the channel's notifications arrive late.
    for _ in range(2):
        late = signed_channel_notification(payment, uuid.uuid4().hex, int(time.time()))
        assert httpx.post(notify_url, data=late, timeout=5).text == "success"

    def timeline() -> list[str] | None:
        body = api.get(f"/v1/payments/{payment['id']}").json()
        types = [event["type"] for event in body["events"]]
        return types if "PaymentPaidAfterClose" in types else None

    types = eventually(timeline, what="the late payment to be recorded")
    assert types.count("PaymentPaidAfterClose") == 1
    assert "PaymentSucceeded" not in types
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == "canceled"
    eventually(
        lambda: ledger_balance(platform, "platform:refunds_clearing") == clearing_before - 777,
        what="the ledger to owe the payer 777",
    )


def test_a_cancel_with_an_idempotency_key_replays_its_first_answer(api: httpx.Client) -> None:
    payment = api.post("/v1/payments", json=new_payment()).json()
    url = f"/v1/payments/{payment['id']}/cancel"
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.post(url, json={"reason": "customer_left"}, headers=key)
    again = api.post(url, json={"reason": "customer_left"}, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    reused = api.post(url, json={"reason": "other"}, headers=key)
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
