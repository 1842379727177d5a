"""Every channel end to end (Alipay-style, WeChat-Pay-style QR, cards), the simulator's
misbehaviour (duplicate and out-of-order notifications, outages), and routing around a
failing channel."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from services.common.launcher import PlatformInfo
from tests.e2e.conftest import PspFaults
from tests.e2e.helpers import eventually, new_payment


def succeeded(api: httpx.Client, payment_id: str) -> dict[str, Any]:
    return eventually(
        lambda: (p := api.get(f"/v1/payments/{payment_id}").json())["status"] == "succeeded" and p,
        what=f"payment {payment_id} succeeded",
    )


def delivered_notifications(info: PlatformInfo, key: str) -> list[dict[str, Any]]:
    """The simulator's record of the notifications it delivered about `key`."""
    answer = httpx.get(
        f"{info.psp_base_url}/_sim/notifications", params={"reference": key}, timeout=5
    )
    answer.raise_for_status()
    records: list[dict[str, Any]] = answer.json()
    return [r for r in records if r["outcome"] == "acknowledged"]


def test_a_wechat_pay_payment_shows_a_qr_code_and_is_paid_and_refunded(
    api: httpx.Client,
) -> None:
    payment = api.post("/v1/payments", json=new_payment(amount=880, channel="wechat_pay")).json()
    assert payment["status"] == "requires_payment", payment
    assert payment["next_action"]["qr_code"].startswith("weixin://")
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
    succeeded(api, payment["id"])
    refund = api.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": 80})
    assert refund.status_code == 201, refund.text
    eventually(
        lambda: api.get(f"/v1/refunds/{refund.json()['id']}").json()["status"] == "succeeded",
        what="wechat refund succeeded",
    )


def test_a_card_payment_is_authorised_and_captured_at_once(api: httpx.Client) -> None:
    created = api.post("/v1/payments", json=new_payment(amount=4200, channel="card"))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "succeeded"
    assert created.json()["next_action"] is None
    types = [e["type"] for e in api.get(f"/v1/payments/{created.json()['id']}").json()["events"]]
    assert "PaymentSucceeded" in types and "PaymentActionRequired" not in types
    refund = api.post(f"/v1/payments/{created.json()['id']}/refunds", json={})
    assert refund.status_code == 201 and refund.json()["amount"] == 4200


def test_a_declined_card_fails_the_payment_with_the_channels_reason(api: httpx.Client) -> None:
    created = api.post(
        "/v1/payments",
        json=new_payment(amount=1500, channel="card", description="gift [psp:decline]"),
    ).json()
    assert created["status"] == "failed", created
    assert created["failure"]["code"] == "channel_card_declined"


@pytest.mark.parametrize("channel", ["alipay", "wechat_pay", "card"])
def test_duplicate_and_out_of_order_notifications_make_exactly_one_success(
    api: httpx.Client, info: PlatformInfo, psp_faults: PspFaults, channel: str
) -> None:
    psp_faults.set(channel, duplicate_notifications=True, out_of_order_notifications=True)
    payment = api.post("/v1/payments", json=new_payment(amount=2100, channel=channel)).json()
    if payment["next_action"] is not None:
        assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
    succeeded(api, payment["id"])
    # Every copy (the duplicate and the stale earlier status) reached the gateway and was
    # acknowledged; none of them made a second success.
    eventually(
        lambda: len(delivered_notifications(info, payment["id"])) >= 3,
        what="the original, duplicate and out-of-order notifications delivered",
    )
    detail = api.get(f"/v1/payments/{payment['id']}").json()
    assert [e["type"] for e in detail["events"]].count("PaymentSucceeded") == 1
    assert detail["status"] == "succeeded"


def test_a_failing_channel_is_routed_around_and_comes_back(
    api: httpx.Client, psp_faults: PspFaults
) -> None:
    psp_faults.set("wechat_pay", unavailable=True)
    # The first payment meets the outage. A 503 says nothing about whether the channel
    # opened the trade, so the payment is not failed: its submission is sent again on its
    # schedule, and those calls open the channel's circuit.
    first = api.post(
        "/v1/payments", json=new_payment(amount=500, channels=["wechat_pay", "alipay"])
    ).json()
    assert first["channel"] == "wechat_pay"

    def rerouted() -> dict[str, object] | None:
        payment = api.post(
            "/v1/payments", json=new_payment(amount=500, channels=["wechat_pay", "alipay"])
        ).json()
        return payment if payment["channel"] == "alipay" else None

    # New payments that allow another channel go there once the circuit is open; the
    # others are refused at once.
    routed = eventually(rerouted, what="a new payment routed around the failing channel")
    assert routed["status"] == "requires_payment"
    only_wechat = api.post("/v1/payments", json=new_payment(amount=500, channel="wechat_pay"))
    assert only_wechat.status_code == 503
    assert only_wechat.json()["code"] == "channel_unavailable"
    assert api.get(f"/v1/payments/{first['id']}").json()["status"] == "submitting"
    # Once the channel is back, the first payment's next attempt opens its trade, and
    # after the circuit's pause the channel takes new payments again.
    psp_faults.reset()
    resumed = eventually(
        lambda: (
            (p := api.get(f"/v1/payments/{first['id']}").json())["status"] == "requires_payment"
            and p
        ),
        what="the first payment to reach the payer step once the channel is back",
    )
    assert resumed["channel"] == "wechat_pay"
    time.sleep(3.2)
    back = api.post("/v1/payments", json=new_payment(amount=500, channel="wechat_pay")).json()
    assert (back["channel"], back["status"]) == ("wechat_pay", "requires_payment")
