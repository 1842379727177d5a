"""Two merchants cannot see or touch each other's data, through any merchant endpoint:
another merchant's payment, refund or event is not found, never leaked."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_merchant, eventually, new_payment


def _onboard(info: PlatformInfo, name: str) -> str:
    answer = httpx.post(
        f"{info.api_base_url}/v1/admin/merchants",
        headers={"Authorization": f"Bearer {info.admin_key}"},
        json={"name": name},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["api_key"]["secret"]
    return secret


def test_every_merchant_endpoint_is_scoped_to_the_calling_merchant(info: PlatformInfo) -> None:
    with (
        as_merchant(info, _onboard(info, "Owner Shop")) as owner,
        as_merchant(info, _onboard(info, "Stranger Shop")) as stranger,
    ):
        payment = owner.post("/v1/payments", json=new_payment(amount=1200)).json()
        assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
        eventually(
            lambda: owner.get(f"/v1/payments/{payment['id']}").json()["status"] == "succeeded",
            what="the owner's payment succeeded",
        )
        refund = owner.post(f"/v1/payments/{payment['id']}/refunds", json={"amount": 200}).json()
        unpaid = owner.post("/v1/payments", json=new_payment(amount=300)).json()

        def owners_event() -> dict[str, Any] | None:
            listed = owner.get("/v1/events", params={"type": "payment.succeeded"}).json()
            return next(iter(listed["data"]), None)

        event = eventually(owners_event, what="the owner's payment.succeeded event")
        owner_endpoint = owner.post(
            "/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]}
        )
        assert owner_endpoint.status_code == 201, owner_endpoint.text

        not_found: list[tuple[str, str, dict[str, int] | None, str]] = [
            ("GET", f"/v1/payments/{payment['id']}", None, "payment_not_found"),
            ("POST", f"/v1/payments/{unpaid['id']}/cancel", None, "payment_not_found"),
            ("POST", f"/v1/payments/{payment['id']}/refunds", {"amount": 1}, "payment_not_found"),
            ("GET", f"/v1/refunds/{refund['id']}", None, "refund_not_found"),
            ("GET", f"/v1/events/{event['id']}", None, "event_not_found"),
        ]
        for method, path, body, code in not_found:
            answer = stranger.request(method, path, json=body)
            assert (answer.status_code, answer.json()["code"]) == (404, code), (method, path)

        listed = stranger.get("/v1/payments", params={"order_id": payment["order_id"]}).json()
        assert listed["data"] == []
        assert stranger.get("/v1/payments").json()["data"] == []
        assert stranger.get("/v1/events").json()["data"] == []
        assert stranger.get("/v1/balance").json()["balances"] == []
        endpoints = stranger.get("/v1/webhook_endpoints").json()
        assert endpoints.get("data", endpoints) == []
        # The owner's data is intact and still its own.
        assert owner.get(f"/v1/payments/{unpaid['id']}").json()["status"] == "requires_payment"
        assert owner.get(f"/v1/refunds/{refund['id']}").status_code == 200
