"""A marketplace payment shared out in splits: each recipient's balance gets its share, the
merchant of record keeps the rest less its fee, settlement pays each party its own part,
and splits that do not fit or name an unknown recipient are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_admin, as_merchant, balance_of, eventually, new_payment

# Long enough that another test's settlement run (for tomorrow) leaves these merchants alone
# until this test settles them itself.
DELAY_DAYS = 20


def onboard(admin: httpx.Client, name: str) -> tuple[str, str]:
    answer = admin.post(
        "/v1/admin/merchants",
        json={
            "name": name,
            "fee_plans": {"alipay": {"basis_points": 100, "fixed_minor": 0}},
            "settlement_terms": {"delay_days": DELAY_DAYS},
        },
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return body["merchant"]["id"], body["api_key"]["secret"]


def test_a_marketplace_payment_pays_each_party_its_share(info: PlatformInfo) -> None:
    admin = as_admin(info)
    with admin:
        shop_id, shop_key = onboard(admin, "Marketplace")
        seller_id, seller_key = onboard(admin, "Seller")
        partner_id, partner_key = onboard(admin, "Partner")
        with (
            as_merchant(info, shop_key) as shop,
            as_merchant(info, seller_key) as seller,
            as_merchant(info, partner_key) as partner,
        ):
            # 10,000 at 100 bp: fee 100, so 9,900 can be shared.
            too_much = shop.post(
                "/v1/payments",
                json=new_payment(
                    10_000,
                    splits=[
                        {"recipient": seller_id, "amount": 9_000},
                        {"recipient": partner_id, "amount": 901},
                    ],
                ),
            )
            assert (too_much.status_code, too_much.json()["code"]) == (
                422,
                "split_exceeds_available",
            )
            for recipient in ("mch_nobody_here", shop_id):
                unknown = shop.post(
                    "/v1/payments",
                    json=new_payment(10_000, splits=[{"recipient": recipient, "amount": 1}]),
                )
                assert (unknown.status_code, unknown.json()["code"]) == (
                    422,
                    "split_recipient_unknown",
                )

            shares = [
                {"recipient": seller_id, "amount": 7_000},
                {"recipient": partner_id, "amount": 500},
            ]
            payment = shop.post("/v1/payments", json=new_payment(10_000, splits=shares)).json()
            assert payment["splits"] == shares
            assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200

            def balances_are(
                pending: dict[httpx.Client, int], available: dict[httpx.Client, int]
            ) -> bool:
                return all(
                    balance_of(client, "CNY").get("pending") == pending[client]
                    and balance_of(client, "CNY").get("available") == available[client]
                    for client in pending
                )

            expected = {shop: 10_000 - 100 - 7_000 - 500, seller: 7_000, partner: 500}
            nothing = dict.fromkeys(expected, 0)
            eventually(lambda: balances_are(expected, nothing), what="the shares pending")
            assert shop.get(f"/v1/payments/{payment['id']}").json()["splits"] == shares
            # The seller sees the share among its balance transactions, from the same event.
            moves = seller.get("/v1/balance_transactions").json()["data"]
            assert [(m["kind"], m["bucket"], m["amount"]) for m in moves] == [
                ("payment_succeeded", "pending", 7_000)
            ]

            # Settlement pays each party its own part, from the one payment.
            due = (datetime.now(UTC).date() + timedelta(days=DELAY_DAYS)).isoformat()
            run = admin.post("/v1/admin/settlements/run", json={"as_of": due})
            assert run.status_code == 200, run.text
            created: list[dict[str, Any]] = run.json()["created"]
            nets = {
                batch["merchant_id"]: batch["net_minor"]
                for batch in created
                if batch["merchant_id"] in (shop_id, seller_id, partner_id)
            }
            assert nets == {shop_id: 2_400, seller_id: 7_000, partner_id: 500}
            eventually(lambda: balances_are(nothing, expected), what="each share settled")
