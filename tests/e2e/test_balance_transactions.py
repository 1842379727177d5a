"""A merchant's balance transactions over HTTP against the whole platform: a payment's net
credit and a partial refund's debit on pending, with the events behind them, paged one at
a time; another merchant sees none of them. The fee is computed here independently."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_admin, as_merchant, eventually, new_payment

BASIS_POINTS = 250
FIXED_MINOR = 30


def fee_minor(amount_minor: int) -> int:
    """The documented fee rule: fixed part plus the basis points rounded half to even,
    never more than the payment."""
    proportional = (Decimal(amount_minor) * BASIS_POINTS / 10_000).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN
    )
    return min(FIXED_MINOR + int(proportional), amount_minor)


def onboard(admin: httpx.Client, name: str) -> dict[str, Any]:
    answer = admin.post(
        "/v1/admin/merchants",
        json={
            "name": name,
            "fee_plans": {
                "alipay": {
                    "basis_points": BASIS_POINTS,
                    "fixed_minor_by_currency": {"CNY": FIXED_MINOR},
                }
            },
            # Settled only in 30 days: a settlement run by another test leaves this one be.
            "settlement_terms": {"delay_days": 30, "cutoff_time": "00:00", "time_zone": "UTC"},
        },
    )
    assert answer.status_code == 201, answer.text
    onboarded: dict[str, Any] = answer.json()
    return onboarded


def event_id_of(detail: dict[str, Any], event_type: str) -> str:
    (event_id,) = [event["id"] for event in detail["events"] if event["type"] == event_type]
    return str(event_id)


def test_a_payment_and_its_partial_refund_are_listed_as_pending_movements(
    info: PlatformInfo,
) -> None:
    amount, refunded = 12_340, 3_000
    fee = fee_minor(amount)
    assert fee == 30 + 308  # 308.5 is a tie: rounded to the even 308
    admin = as_admin(info)
    with admin:
        shop_key = onboard(admin, "Ledger Reader Shop")["api_key"]["secret"]
        stranger_key = onboard(admin, "Stranger Shop")["api_key"]["secret"]
        other_merchant_id = onboard(admin, "Third Shop")["merchant"]["id"]
    with as_merchant(info, shop_key) as shop, as_merchant(info, stranger_key) as stranger:
        payment = shop.post("/v1/payments", json=new_payment(amount=amount)).json()
        assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
        eventually(
            lambda: shop.get(f"/v1/payments/{payment['id']}").json()["status"] == "succeeded",
            what="the payment succeeded",
        )
        refund = shop.post(
            f"/v1/payments/{payment['id']}/refunds", json={"amount": refunded}
        ).json()
        eventually(
            lambda: shop.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded",
            what="the refund succeeded",
        )
        detail = shop.get(f"/v1/payments/{payment['id']}").json()
        paid_event = event_id_of(detail, "PaymentSucceeded")
        refund_event = event_id_of(detail, "RefundSucceeded")

        def both_posted() -> list[dict[str, Any]] | None:
            answer = shop.get("/v1/balance_transactions")
            assert answer.status_code == 200, answer.text
            listed: list[dict[str, Any]] = answer.json()["data"]
            return listed if len(listed) == 2 else None

        listed = eventually(both_posted, what="the payment and the refund posted")
        assert [
            (t["object"], t["kind"], t["source_event_id"], t["bucket"], t["currency"], t["amount"])
            for t in listed
        ] == [
            ("balance_transaction", "refund_succeeded", refund_event, "pending", "CNY", -refunded),
            (
                "balance_transaction",
                "payment_succeeded",
                paid_event,
                "pending",
                "CNY",
                amount - fee,
            ),
        ]

        first = shop.get("/v1/balance_transactions", params={"limit": 1}).json()
        assert [t["id"] for t in first["data"]] == [listed[0]["id"]]
        assert (first["has_more"], first["next_cursor"]) == (True, listed[0]["id"])
        second = shop.get(
            "/v1/balance_transactions", params={"limit": 1, "starting_after": first["next_cursor"]}
        ).json()
        assert [t["id"] for t in second["data"]] == [listed[1]["id"]]
        assert (second["has_more"], second["next_cursor"]) == (False, None)

        # The merchant is the key's: a merchant id in the query changes nothing.
        spoofed = shop.get("/v1/balance_transactions", params={"merchant_id": other_merchant_id})
        assert spoofed.json()["data"] == listed
        for made_up in ("btx_nope_1", f"btx_je_{'0' * 32}_2", "not-a-cursor"):
            unknown = shop.get("/v1/balance_transactions", params={"starting_after": made_up})
            assert (unknown.status_code, unknown.json()["code"]) == (422, "invalid_cursor")
        # An empty cursor (found by the API fuzzer) is unknown too, not a ledger failure.
        empty = shop.get("/v1/balance_transactions", params={"starting_after": ""})
        assert (empty.status_code, empty.json()["code"]) == (422, "invalid_cursor")

        assert stranger.get("/v1/balance_transactions").json() == {
            "object": "list",
            "data": [],
            "has_more": False,
            "next_cursor": None,
        }
        theirs = stranger.get(
            "/v1/balance_transactions", params={"starting_after": listed[0]["id"]}
        )
        assert (theirs.status_code, theirs.json()["code"]) == (422, "invalid_cursor")
    anonymous = httpx.get(f"{info.api_base_url}/v1/balance_transactions", timeout=10)
    assert anonymous.status_code == 401
