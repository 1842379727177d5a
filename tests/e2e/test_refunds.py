"""Refunds over HTTP against the whole platform: partial and full, never more than was
paid (concurrent requests included), the channel's asynchronous result, failures that can
be retried, the ledger and events that follow, and the notices the payer gets."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.conftest import PspFaults
from tests.e2e.helpers import (
    as_admin,
    as_merchant,
    balance_of,
    eventually,
    ledger_balance,
    new_payment,
    webhook_lines,
)


def paid_payment(api: httpx.Client, amount: int, **overrides: Any) -> dict[str, Any]:
    payment = api.post("/v1/payments", json=new_payment(amount=amount, **overrides)).json()
    assert payment["status"] == "requires_payment", payment
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
    return eventually(
        lambda: (
            (p := api.get(f"/v1/payments/{payment['id']}").json())["status"] == "succeeded" and p
        ),
        what="payment succeeded",
    )


def refund_settles(api: httpx.Client, refund_id: str, status: str = "succeeded") -> dict[str, Any]:
    return eventually(
        lambda: (r := api.get(f"/v1/refunds/{refund_id}").json())["status"] == status and r,
        what=f"refund {refund_id} {status}",
    )


def test_partial_refunds_add_up_to_the_captured_amount_and_one_more_is_refused(
    api: httpx.Client, info: PlatformInfo
) -> None:
    balance_start = balance_of(api, "CNY")["pending"]
    payment = paid_payment(api, 1000)
    # 1000 at 60 bp leaves the merchant 994, once the ledger's posting reaches the gateway
    # (the payment's own status may be projected first).
    balance_before = balance_start + 994
    eventually(
        lambda: balance_of(api, "CNY")["pending"] == balance_before,
        what="the payment in the merchant's balance",
    )
    refund_ids = []
    for amount in (300, 300, 400):
        answer = api.post(
            f"/v1/payments/{payment['id']}/refunds", json={"amount": amount, "reason": "damaged"}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] in {"pending", "succeeded"}
        refund_ids.append(answer.json()["id"])
    one_more = api.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": 1})
    assert one_more.status_code == 422
    assert one_more.headers["content-type"].startswith("application/problem+json")
    assert one_more.json()["code"] == "refund_exceeds_captured"

    for refund_id in refund_ids:
        refund_settles(api, refund_id)
    detail = api.get(f"/v1/payments/{payment['id']}").json()
    assert detail["amount_refunded"] == 1000
    assert [r["amount"] for r in detail["refunds"]] == [300, 300, 400]
    assert {r["status"] for r in detail["refunds"]} == {"succeeded"}
    types = [event["type"] for event in detail["events"]]
    assert types.count("RefundRequested") == 3 and types.count("RefundSucceeded") == 3
    assert "RefundRefused" in types
    # The merchant bears the refunds (the fee stays with the platform).
    eventually(
        lambda: balance_of(api, "CNY")["pending"] == balance_before - 1000,
        what="the merchant's balance reduced by the refunds",
    )

    def refund_events() -> list[dict[str, Any]] | None:
        listed = api.get("/v1/events", params={"type": "refund.succeeded", "limit": 100}).json()
        mine = [e for e in listed["data"] if e["data"]["object"]["payment_id"] == payment["id"]]
        return mine if len(mine) == 3 else None

    assert {e["data"]["object"]["id"] for e in eventually(refund_events)} == set(refund_ids)

    def refund_webhooks() -> set[str] | None:
        assert info.demo_webhook_log is not None
        delivered = {
            line["event"]["data"]["object"]["id"]
            for line in webhook_lines(info.demo_webhook_log)
            if line["event"] and line["event"]["type"] == "refund.succeeded"
        }
        return delivered if set(refund_ids) <= delivered else None

    eventually(refund_webhooks, what="signed refund.succeeded webhooks")


def test_concurrent_refund_requests_never_refund_more_than_was_paid(api: httpx.Client) -> None:
    payment = paid_payment(api, 1000)
    url = f"/v1/payments/{payment['id']}/refunds"
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: api.post(url, json={"amount": 300}), range(6)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201, 201, 201, 422, 422, 422], [a.text for a in answers]
    assert {a.json()["code"] for a in answers if a.status_code == 422} == {
        "refund_exceeds_captured"
    }
    # The rest is still refundable, exactly once: a refund without amount takes it.
    rest = api.post(url, json={})
    assert rest.status_code == 201 and rest.json()["amount"] == 100
    assert api.post(url, json={}).json()["code"] == "refund_exceeds_captured"


def test_a_failed_refund_is_visible_and_can_be_retried(
    api: httpx.Client, psp_faults: PspFaults
) -> None:
    payment = paid_payment(api, 800)
    psp_faults.set("alipay", fail_refunds=True)
    first = api.post(f"/v1/payments/{payment['id']}/refunds", json={"reason": "returned"})
    assert first.status_code == 201, first.text
    failed = refund_settles(api, first.json()["id"], "failed")
    assert failed["failure"]["code"].startswith("channel_")
    psp_faults.reset()
    # The failed amount is refundable again.
    retried = api.post(f"/v1/payments/{payment['id']}/refunds", json={"reason": "returned"})
    assert retried.status_code == 201 and retried.json()["amount"] == 800
    refund_settles(api, retried.json()["id"])
    detail = api.get(f"/v1/payments/{payment['id']}").json()
    assert [(r["status"], r["amount"]) for r in detail["refunds"]] == [
        ("failed", 800),
        ("succeeded", 800),
    ]
    assert detail["amount_refunded"] == 800


def test_refund_requests_honour_idempotency_keys(api: httpx.Client) -> None:
    payment = paid_payment(api, 500)
    url = f"/v1/payments/{payment['id']}/refunds"
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.post(url, json={"amount": 200}, headers=key)
    again = api.post(url, json={"amount": 200}, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = api.post(url, json={"amount": 201}, headers=key)
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
    detail = eventually(
        lambda: (
            (d := api.get(f"/v1/payments/{payment['id']}").json())["amount_refunded"] == 200 and d
        ),
        what="one refund of 200",
    )
    assert len(detail["refunds"]) == 1


def test_unpaid_payments_and_other_merchants_cannot_be_refunded(
    api: httpx.Client, info: PlatformInfo
) -> None:
    unpaid = api.post("/v1/payments", json=new_payment(amount=100)).json()
    refused = api.post(f"/v1/payments/{unpaid['id']}/refunds", json={})
    assert (refused.status_code, refused.json()["code"]) == (422, "payment_not_paid")

    payment = paid_payment(api, 300)
    refund = api.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": 100}).json()
    admin = as_admin(info)
    with admin:
        other = admin.post("/v1/admin/merchants", json={"name": "Other Shop"}).json()
    with as_merchant(info, other["api_key"]["secret"]) as stranger:
        assert stranger.get(f"/v1/refunds/{refund['id']}").json()["code"] == "refund_not_found"
        answer = stranger.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": 1})
        assert (answer.status_code, answer.json()["code"]) == (404, "payment_not_found")
    assert api.get("/v1/refunds/re_nobody").status_code == 404


def test_a_notification_arriving_after_expiry_is_refunded_automatically(
    api: httpx.Client, platform: Any, psp_faults: PspFaults
) -> None:
    clearing_before = ledger_balance(platform, "platform:refunds_clearing")
    receivable_before = ledger_balance(platform, "platform:channel_receivable:alipay")
    # The payer pays at once, but the channel's notice is late: the payment expires first.
    psp_faults.set("alipay", notification_delay_ms=3000)
    payment = api.post("/v1/payments", json=new_payment(amount=640, expires_in_seconds=1)).json()
    assert payment["status"] == "requires_payment", payment
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
    eventually(
        lambda: api.get(f"/v1/payments/{payment['id']}").json()["status"] == "expired",
        what="the payment expired",
    )

    def refunded() -> dict[str, Any] | None:
        detail = api.get(f"/v1/payments/{payment['id']}").json()
        done = [r for r in detail["refunds"] if r["status"] == "succeeded"]
        return detail if done else None

    detail = eventually(refunded, what="the late money refunded")
    types = [event["type"] for event in detail["events"]]
    # Both facts are recorded: the money came after the expiry, and it went back.
    assert types.index("PaymentExpired") < types.index("PaymentPaidAfterClose")
    assert types.count("PaymentPaidAfterClose") == 1
    assert types[-1] == "RefundSucceeded"
    assert detail["status"] == "expired"
    (refund,) = detail["refunds"]
    assert (refund["amount"], refund["initiator"]) == (640, "paid_after_close")
    # Owed to the payer, then paid back: the clearing account and the channel are square.
    eventually(
        lambda: (
            ledger_balance(platform, "platform:refunds_clearing") == clearing_before
            and ledger_balance(platform, "platform:channel_receivable:alipay") == receivable_before
        ),
        what="the ledger's clearing and receivable back where they were",
    )


def test_a_refund_whose_notification_is_lost_is_found_by_querying_the_channel(
    api: httpx.Client, psp_faults: PspFaults
) -> None:
    payment = paid_payment(api, 450, channel="wechat_pay")
    psp_faults.set("wechat_pay", lose_notifications=True)
    refund = api.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": 450})
    assert refund.status_code == 201, refund.text
    settled = refund_settles(api, refund.json()["id"])
    assert settled["channel_refund_id"]
    detail = api.get(f"/v1/payments/{payment['id']}").json()
    assert detail["amount_refunded"] == 450


def notifier_log_lines(info: PlatformInfo, event: str) -> list[dict[str, Any]]:
    assert info.log_dir is not None
    path = info.log_dir / "notifier.log"
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            found.append(json.loads(line))
    return found


def test_the_payer_is_told_of_the_payment_and_the_refund_by_the_default_sender(
    api: httpx.Client, info: PlatformInfo
) -> None:
    payer_id = f"payer-{uuid.uuid4().hex[:8]}"
    payment = paid_payment(api, 1234, payer={"id": payer_id})
    refund = api.post(
        f"/v1/payments/{payment['id']}/refunds", json={"amount": 234, "reason": "damaged"}
    )
    assert refund.status_code == 201, refund.text
    refund_settles(api, refund.json()["id"])

    def notices() -> list[dict[str, Any]] | None:
        mine = [
            line
            for line in notifier_log_lines(info, "payer_notice")
            if line["payment_id"] == payment["id"]
        ]
        return mine if len(mine) >= 2 else None  # a third one would fail below

    told = eventually(notices, what="the payer's notices in the notifier's log")
    assert {line["payer_id"] for line in told} == {payer_id}
    assert sorted(line["kind"] for line in told) == ["payment_confirmation", "refund_notice"]
    by_kind = {line["kind"]: line for line in told}
    assert by_kind["payment_confirmation"]["text"] == (
        f"Your payment of 12.34 CNY for order {payment['order_id']} to merchant "
        f"{payment['merchant_id']} succeeded."
    )
    assert by_kind["refund_notice"]["refund_id"] == refund.json()["id"]
    assert by_kind["refund_notice"]["text"].startswith("2.34 CNY for order ")
