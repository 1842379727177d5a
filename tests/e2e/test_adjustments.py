"""Operations correct a merchant's available balance and reverse the correction; the
merchant sees both in its balance and balance transactions."""

from __future__ import annotations

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_admin, as_merchant, balance_of, eventually


def test_an_adjustment_and_its_reversal_show_in_the_merchants_balance(info: PlatformInfo) -> None:
    admin = as_admin(info)
    with admin:
        onboarded = admin.post(
            "/v1/admin/merchants",
            json={
                "name": "Adjusted",
                "fee_plans": {"alipay": {"basis_points": 60, "fixed_minor": 0}},
            },
        ).json()
        merchant_id = onboarded["merchant"]["id"]
        request = {
            "merchant_id": merchant_id,
            "reference": "goodwill-1",
            "currency": "CNY",
            "amount": 1_500,
            "reason": "goodwill for a late delivery",
        }

        def post_adjustment() -> httpx.Response | None:
            # The ledger learns of the new merchant from merchants.events, a moment later.
            answer = admin.post("/v1/admin/adjustments", json=request)
            return None if answer.status_code == 404 else answer

        posted = eventually(post_adjustment, what="the ledger to know the merchant")
        assert posted.status_code == 201, posted.text
        adjustment = posted.json()
        assert (adjustment["amount"], adjustment["reverses"]) == (1_500, None)
        with as_merchant(info, onboarded["api_key"]["secret"]) as shop:
            eventually(lambda: balance_of(shop, "CNY")["available"] == 1_500, what="adjusted")
            refused = shop.post("/v1/admin/adjustments", json=request)
            assert refused.status_code == 403
            reversed_ = admin.post(
                f"/v1/admin/adjustments/{adjustment['id']}/reverse", json={"reason": "mistake"}
            )
            assert reversed_.status_code == 201, reversed_.text
            assert reversed_.json()["amount"] == -1_500
            eventually(lambda: balance_of(shop, "CNY")["available"] == 0, what="reversed")
            moves = shop.get("/v1/balance_transactions").json()["data"]
            assert [(m["kind"], m["bucket"], m["amount"]) for m in moves] == [
                ("adjustment", "available", -1_500),
                ("adjustment", "available", 1_500),
            ]
        malformed = admin.post("/v1/admin/adjustments/nope/reverse", json={"reason": "x"})
        assert (malformed.status_code, malformed.json()["code"]) == (422, "invalid_request")
        unknown = admin.post(f"/v1/admin/adjustments/adj_{'0' * 32}/reverse", json={"reason": "x"})
        assert (unknown.status_code, unknown.json()["code"]) == (404, "adjustment_not_found")
