"""A T+1 merchant takes payments and a refund; settlement for the next day moves exactly
the net (computed here independently) from pending to available, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_merchant, balance_of, eventually, new_payment


def test_settlement_moves_a_t_plus_one_merchants_net_to_available_once(
    info: PlatformInfo,
) -> None:
    admin = httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.admin_key}"},
        timeout=30.0,
    )
    with admin:
        onboarded = admin.post(
            "/v1/admin/merchants",
            json={
                "name": "T+1 Shop",
                "fee_plans": {"alipay": {"basis_points": 60, "fixed_minor": 0}},
                "settlement_terms": {"delay_days": 1, "cutoff_time": "00:00", "time_zone": "UTC"},
            },
        ).json()
        merchant_id = onboarded["merchant"]["id"]
        with as_merchant(info, onboarded["api_key"]["secret"]) as shop:
            paid = []
            for amount in (10_000, 2_500):
                payment = shop.post("/v1/payments", json=new_payment(amount=amount)).json()
                assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
                paid.append(payment["id"])

            def all_succeeded() -> bool:
                statuses = {shop.get(f"/v1/payments/{p}").json()["status"] for p in paid}
                return statuses == {"succeeded"}

            eventually(all_succeeded, what="both payments succeeded")
            refund = shop.post(f"/v1/payments/{paid[0]}/refunds", json={"amount": 4_000}).json()
            eventually(
                lambda: shop.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded",
                what="refund succeeded",
            )
            # Fees at 60 bp: 60 and 15; the merchant bears the refund.
            net = (10_000 - 60) + (2_500 - 15) - 4_000
            eventually(lambda: balance_of(shop, "CNY")["pending"] == net, what="pending balance")

            today = datetime.now(UTC).date()

            def batches_for(as_of: str) -> list[dict[str, Any]]:
                run = admin.post("/v1/admin/settlements/run", json={"as_of": as_of})
                assert run.status_code == 200, run.text
                created: list[dict[str, Any]] = run.json()["created"]
                return [batch for batch in created if batch["merchant_id"] == merchant_id]

            assert batches_for(today.isoformat()) == []
            tomorrow = (today + timedelta(days=1)).isoformat()
            (batch,) = batches_for(tomorrow)
            assert (batch["net_minor"], batch["line_count"], batch["currency"]) == (net, 3, "CNY")
            assert batches_for(tomorrow) == []
            # The merchant reads the batch, its lines and its CSV statement.
            listed = eventually(
                lambda: shop.get("/v1/settlements").json()["data"], what="the settlement listed"
            )
            assert [item["id"] for item in listed] == [batch["batch_id"]]
            detail = shop.get(f"/v1/settlements/{batch['batch_id']}").json()
            assert detail["net"] == net
            assert sorted(line["amount_minor"] for line in detail["lines"]) == [
                -4_000,
                2_485,
                9_940,
            ]
            csv = shop.get(f"/v1/settlements/{batch['batch_id']}/statement.csv")
            assert csv.headers["content-type"].startswith("text/csv")
            assert csv.text.strip().splitlines()[-1].endswith(f",net,,CNY,{net}")
            other = as_merchant(info, info.demo_api_key or "")
            with other:
                hidden = other.get(f"/v1/settlements/{batch['batch_id']}")
                assert (hidden.status_code, hidden.json()["code"]) == (404, "settlement_not_found")
            eventually(
                lambda: (
                    balance_of(shop, "CNY")
                    == {"currency": "CNY", "pending": 0, "available": net, "reserve": 0}
                ),
                what="the net available and nothing pending",
            )
        refused = httpx.post(
            f"{info.api_base_url}/v1/admin/settlements/run",
            json={"as_of": tomorrow},
            headers={"Authorization": f"Bearer {info.demo_api_key}"},
            timeout=10,
        )
        assert refused.status_code == 403
