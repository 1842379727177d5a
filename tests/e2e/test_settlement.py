"""A T+1 merchant takes payments and a refund; settlement for the next day moves exactly
the net (computed here independently) from pending to available, once; a payout that the
bank fails returns the money, and the next day's payout is paid to the bank account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.conftest import PspFaults
from tests.e2e.helpers import as_admin, as_merchant, balance_of, eventually, new_payment


def test_a_t_plus_one_merchant_is_settled_once_and_paid_out(
    info: PlatformInfo, psp_faults: PspFaults
) -> None:
    admin = as_admin(info)
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

            def balance_is(pending: int, available: int, in_transit: int) -> bool:
                return balance_of(shop, "CNY") == {
                    "currency": "CNY",
                    "pending": pending,
                    "available": available,
                    "reserve": 0,
                    "in_transit": in_transit,
                }

            eventually(lambda: balance_is(0, net, 0), what="the net available, nothing pending")

            def payouts_for(as_of: str) -> list[dict[str, Any]]:
                run = admin.post("/v1/admin/payouts/run", json={"as_of": as_of})
                assert run.status_code == 200, run.text
                created: list[dict[str, Any]] = run.json()["created"]
                return [payout for payout in created if payout["merchant_id"] == merchant_id]

            def payout_once(payout_id: str, status: str) -> dict[str, Any]:
                def probe() -> dict[str, Any] | None:
                    answer = shop.get(f"/v1/payouts/{payout_id}")
                    if answer.status_code == 404:
                        return None  # the gateway has not projected the payout yet
                    assert answer.status_code == 200, answer.text
                    found: dict[str, Any] = answer.json()
                    return found if found["status"] == status else None

                return eventually(probe, what=f"payout {payout_id} {status}")

            # The bank fails the first payout: the money comes back to available.
            psp_faults.set("bank", fail_payouts=True)
            (failing,) = payouts_for(tomorrow)
            assert (failing["amount_minor"], failing["currency"]) == (net, "CNY")
            assert payouts_for(tomorrow) == []
            failed = payout_once(failing["payout_id"], "failed")
            assert failed["failure"]["code"] == "bank_account_closed"
            eventually(lambda: balance_is(0, net, 0), what="the failed payout's money back")
            psp_faults.reset()

            # The next day's run pays it; the bank confirms and nothing is left.
            day_after = (today + timedelta(days=2)).isoformat()
            (paying,) = payouts_for(day_after)
            assert paying["amount_minor"] == net
            confirmed = payout_once(paying["payout_id"], "paid")
            assert confirmed["amount"] == net and confirmed["bank_reference"]
            eventually(lambda: balance_is(0, 0, 0), what="everything paid out")
            events = shop.get("/v1/events", params={"type": "payout.paid"}).json()["data"]
            assert [event["data"]["object"]["id"] for event in events] == [paying["payout_id"]]
            listed_payouts = shop.get("/v1/payouts").json()["data"]
            assert [(item["id"], item["status"]) for item in listed_payouts] == [
                (paying["payout_id"], "paid"),
                (failing["payout_id"], "failed"),
            ]
        refused = httpx.post(
            f"{info.api_base_url}/v1/admin/settlements/run",
            json={"as_of": tomorrow},
            headers={"Authorization": f"Bearer {info.demo_api_key}"},
            timeout=10,
        )
        assert refused.status_code == 403
