"""Risk control end to end: a payer over its daily count limit is denied with the rule in
the failure, a blocked card fingerprint is denied, and an anomalous amount is held for
review until an admin approves it and the payer pays."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_admin, as_merchant, eventually, new_payment


def new_merchant(info: PlatformInfo, admin: httpx.Client, rules: dict[str, Any]) -> httpx.Client:
    """A new merchant with `rules` over the platform defaults; its API client."""
    onboarded = admin.post(
        "/v1/admin/merchants",
        json={"name": "Risky", "fee_plans": {"alipay": {"basis_points": 60, "fixed_minor": 0}}},
    ).json()
    merchant_id = onboarded["merchant"]["id"]
    current = admin.get(f"/v1/admin/merchants/{merchant_id}/risk_rules")
    assert current.status_code == 200, current.text
    updated = admin.put(
        f"/v1/admin/merchants/{merchant_id}/risk_rules", json={**current.json(), **rules}
    )
    assert updated.status_code == 200, updated.text
    return as_merchant(info, onboarded["api_key"]["secret"])


def settled(shop: httpx.Client, payment_id: str, statuses: set[str]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        payment: dict[str, Any] = shop.get(f"/v1/payments/{payment_id}").json()
        return payment if payment["status"] in statuses else None

    return eventually(probe, what=f"payment {payment_id} in {statuses}")


def pay_as(shop: httpx.Client, amount: int, payer: dict[str, str]) -> dict[str, Any]:
    answer = shop.post("/v1/payments", json=new_payment(amount, payer=payer))
    assert answer.status_code in (201, 202), answer.text
    created: dict[str, Any] = answer.json()
    return settled(shop, created["id"], {"requires_payment", "failed", "in_review"})


def test_a_payer_over_its_daily_count_is_denied_with_the_rule(info: PlatformInfo) -> None:
    with (
        as_admin(info) as admin,
        new_merchant(info, admin, {"payer_daily_count_limit": 2}) as shop,
    ):
        payer = {"id": f"payer-{uuid.uuid4().hex[:8]}"}
        for _ in range(2):
            assert pay_as(shop, 1_000, payer)["status"] == "requires_payment"
        third = pay_as(shop, 1_000, payer)
        assert third["status"] == "failed"
        assert third["failure"]["code"] == "risk_declined"
        assert third["failure"]["rule_ids"] == ["limit.payer_daily_count"]
        assert "3 payments from the payer today" in third["failure"]["message"]
        # Another payer of the same merchant is not affected.
        other = pay_as(shop, 1_000, {"id": f"payer-{uuid.uuid4().hex[:8]}"})
        assert other["status"] == "requires_payment"


def test_a_blocked_card_fingerprint_is_denied_until_unblocked(info: PlatformInfo) -> None:
    card = f"fp_{uuid.uuid4().hex}"
    with as_admin(info) as admin:
        blocked = admin.post(
            "/v1/admin/risk/blocklist",
            json={"type": "card_fingerprint", "value": card, "reason": "stolen card"},
        )
        assert blocked.status_code == 201, blocked.text
        assert (
            admin.post(
                "/v1/admin/risk/blocklist", json={"type": "card_fingerprint", "value": card}
            ).status_code
            == 200
        )
        with new_merchant(info, admin, {}) as shop:
            denied = pay_as(shop, 1_000, {"card_fingerprint": card})
            assert denied["status"] == "failed"
            assert denied["failure"]["rule_ids"] == ["blocklist.card_fingerprint"]
            removed = admin.delete(
                "/v1/admin/risk/blocklist", params={"type": "card_fingerprint", "value": card}
            )
            assert removed.status_code == 204
            assert pay_as(shop, 1_000, {"card_fingerprint": card})["status"] == "requires_payment"
            again = admin.delete(
                "/v1/admin/risk/blocklist", params={"type": "card_fingerprint", "value": card}
            )
            assert (again.status_code, again.json()["code"]) == (404, "blocklist_entry_not_found")
            # Any value reaches risk as given (found by the API fuzzer: a CR or a slash).
            odd = admin.delete(
                "/v1/admin/risk/blocklist", params={"type": "ip", "value": "a/b\r\u00e3"}
            )
            assert (odd.status_code, odd.json()["code"]) == (404, "blocklist_entry_not_found")


def test_an_anomalous_amount_is_reviewed_and_an_approval_lets_it_succeed(
    info: PlatformInfo,
) -> None:
    with as_admin(info) as admin:
        rules = {"anomaly_review_score": 6.0, "anomaly_history_min": 5}
        with new_merchant(info, admin, rules) as shop:
            for amount in (1_000, 1_100, 950, 1_050, 1_000):
                assert pay_as(shop, amount, {})["status"] == "requires_payment"
            typical = pay_as(shop, 1_020, {})
            assert typical["status"] == "requires_payment"
            held = pay_as(shop, 90_000, {})
            assert held["status"] == "in_review"
            reviews = admin.get("/v1/admin/risk/reviews").json()["data"]
            (review,) = [item for item in reviews if item["payment_id"] == held["id"]]
            assert [rule["rule_id"] for rule in review["fired_rules"]] == ["anomaly.amount"]
            assert 50 <= review["score"] <= 99
            refused = shop.post(f"/v1/admin/risk/reviews/{held['id']}/approve")
            assert refused.status_code == 403

            approved = admin.post(
                f"/v1/admin/risk/reviews/{held['id']}/approve", json={"reviewer": "alice"}
            )
            assert approved.status_code == 200, approved.text
            payable = settled(shop, held["id"], {"requires_payment"})
            assert httpx.post(payable["next_action"]["url"], timeout=5).status_code == 200
            done = settled(shop, held["id"], {"succeeded"})
            types = [event["type"] for event in done["events"]]
            assert types.index("PaymentHeldForReview") < types.index("PaymentRiskApproved")
            twice = admin.post(f"/v1/admin/risk/reviews/{held['id']}/approve")
            assert (twice.status_code, twice.json()["code"]) == (409, "review_closed")
            unknown = admin.post("/v1/admin/risk/reviews/pay_unknown/deny")
            assert (unknown.status_code, unknown.json()["code"]) == (404, "review_not_found")
