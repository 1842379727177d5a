"""Operations reports over the running platform: a fresh merchant's payments of every
outcome, and the daily and monthly reports show exactly its figures, with fees computed
here independently from its fee plans."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_admin, as_merchant, eventually, new_payment

# The payments are in CNY: the card plan's fixed part is 0.30 CNY.
CARD_PLAN: dict[str, Any] = {"basis_points": 290, "fixed_minor_by_currency": {"CNY": 30}}
ALIPAY_PLAN: dict[str, Any] = {"basis_points": 60}
FIGURES = ("payments", "succeeded", "failed", "open", "volume", "refunded", "fees")


def fee_minor(amount_minor: int, plan: dict[str, Any]) -> int:
    """The fee the merchant agreed to: the fixed part plus the basis points of the amount
    rounded half to even, never more than the amount."""
    proportional = (Decimal(amount_minor) * plan["basis_points"] / 10_000).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN
    )
    fixed_minor: int = plan.get("fixed_minor_by_currency", {}).get("CNY", 0)
    return min(fixed_minor + int(proportional), amount_minor)


def status_of(shop: httpx.Client, payment_id: str) -> dict[str, Any]:
    answer = shop.get(f"/v1/payments/{payment_id}")
    assert answer.status_code == 200, answer.text
    payment: dict[str, Any] = answer.json()
    return payment


def reached(shop: httpx.Client, payment_id: str, status: str) -> dict[str, Any]:
    return eventually(
        lambda: (p := status_of(shop, payment_id))["status"] == status and p,
        what=f"payment {payment_id} {status}",
    )


def make_payments(shop: httpx.Client) -> list[dict[str, Any]]:
    """Two card payments that succeed (one partly refunded), a declined card, a paid
    Alipay payment, a canceled one, an expired one and one left unpaid."""
    card = [
        shop.post("/v1/payments", json=new_payment(amount=amount, channel="card")).json()
        for amount in (1_500, 500)
    ]
    declined = shop.post(
        "/v1/payments",
        json=new_payment(amount=1_500, channel="card", description="gift [psp:decline]"),
    ).json()
    paid = shop.post("/v1/payments", json=new_payment(amount=1_750)).json()
    assert httpx.post(paid["next_action"]["url"], timeout=5).status_code == 200
    canceled = shop.post("/v1/payments", json=new_payment(amount=1_250)).json()
    assert shop.post(f"/v1/payments/{canceled['id']}/cancel").status_code == 200
    expired = shop.post("/v1/payments", json=new_payment(amount=800, expires_in_seconds=1)).json()
    unpaid = shop.post("/v1/payments", json=new_payment(amount=999)).json()
    refund = shop.post(f"/v1/payments/{card[0]['id']}/refunds", json={"amount": 300}).json()
    eventually(
        lambda: shop.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded",
        what="the refund succeeded",
    )
    outcomes = [
        (card[0], "succeeded"),
        (card[1], "succeeded"),
        (declined, "failed"),
        (paid, "succeeded"),
        (canceled, "canceled"),
        (expired, "expired"),
        (unpaid, "requires_payment"),
    ]
    return [reached(shop, payment["id"], status) for payment, status in outcomes]


def expected_figures(payments: list[dict[str, Any]]) -> dict[str, Any]:
    """The merchant's report figures, worked out from its payments and fee plans."""
    plans = {"card": CARD_PLAN, "alipay": ALIPAY_PLAN}
    succeeded = [p for p in payments if p["status"] == "succeeded"]
    not_succeeded = [p for p in payments if p["status"] in {"failed", "canceled", "expired"}]
    return {
        "payments": len(payments),
        "succeeded": len(succeeded),
        "failed": len(not_succeeded),
        "open": len(payments) - len(succeeded) - len(not_succeeded),
        "volume": sum(p["amount"] for p in succeeded),
        "refunded": sum(p["amount_refunded"] for p in succeeded),
        "fees": sum(fee_minor(p["amount"], plans[p["channel"]]) for p in succeeded),
    }


def add(groups: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for group in groups:
        total.update({name: group[name] for name in FIGURES})
    return {name: total[name] for name in FIGURES}


def check_consistency(report: dict[str, Any]) -> None:
    """Within one report, every currency's channels and merchants add up to its total."""
    assert report["merchants_truncated"] is False
    for total in report["totals"]:
        currency = total["currency"]
        own = {name: total[name] for name in FIGURES}
        assert add([g for g in report["channels"] if g["currency"] == currency]) == own
        assert add([g for g in report["merchants"] if g["currency"] == currency]) == own


def test_reports_show_a_merchants_payments_succeeded_failed_open_and_fees(
    info: PlatformInfo,
) -> None:
    admin = as_admin(info)
    with admin:
        onboarded = admin.post(
            "/v1/admin/merchants",
            json={
                "name": "Report Shop",
                "channels": ["card", "alipay"],
                "fee_plans": {"card": CARD_PLAN, "alipay": ALIPAY_PLAN},
            },
        )
        assert onboarded.status_code == 201, onboarded.text
        merchant_id = onboarded.json()["merchant"]["id"]
        with as_merchant(info, onboarded.json()["api_key"]["secret"]) as shop:
            payments = make_payments(shop)
        # Fees worked out by hand: 30 + 44 (43.5 rounds to even 44) on the first card
        # payment, 30 + 14 (14.5 rounds to even 14) on the second, 10 (10.5 rounds to
        # even 10) on the Alipay one.
        assert [fee_minor(p["amount"], CARD_PLAN) for p in payments[:2]] == [74, 44]
        assert fee_minor(payments[3]["amount"], ALIPAY_PLAN) == 10
        assert expected_figures(payments) == {
            "payments": 7,
            "succeeded": 3,
            "failed": 3,  # declined, canceled, expired
            "open": 1,
            "volume": 1_500 + 500 + 1_750,
            "refunded": 300,
            "fees": 74 + 44 + 10,
        }

        # A payment belongs to the UTC day and month of its `created_at`; a test run
        # across midnight spreads the payments over two days, so each is checked apart.
        days = sorted({created_day(p) for p in payments})
        for day in days:
            on_day = [p for p in payments if created_day(p) == day]
            check_merchant_in_report(admin, "daily", {"date": day}, merchant_id, on_day)
        for month in sorted({day[:7] for day in days}):
            in_month = [p for p in payments if created_day(p)[:7] == month]
            check_merchant_in_report(admin, "monthly", {"month": month}, merchant_id, in_month)

        merchant_key = {"Authorization": f"Bearer {onboarded.json()['api_key']['secret']}"}
        refused = admin.get(
            "/v1/admin/reports/daily", params={"date": days[0]}, headers=merchant_key
        )
        assert (refused.status_code, refused.json()["code"]) == (403, "admin_key_required")
        invalid = admin.get("/v1/admin/reports/monthly", params={"month": "2026-13"})
        assert (invalid.status_code, invalid.json()["code"]) == (422, "invalid_request")


def created_day(payment: dict[str, Any]) -> str:
    return datetime.fromisoformat(payment["created_at"]).astimezone(UTC).date().isoformat()


def check_merchant_in_report(
    admin: httpx.Client,
    kind: str,
    period: dict[str, str],
    merchant_id: str,
    payments: list[dict[str, Any]],
) -> None:
    expected = expected_figures(payments)

    def settled_report() -> dict[str, Any] | None:
        # The ledger posts fees asynchronously: wait until it has posted every one.
        answer = admin.get(f"/v1/admin/reports/{kind}", params=period)
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()
        mine = [g for g in report["merchants"] if g["merchant_id"] == merchant_id]
        return report if mine and mine[0]["fees_pending"] == 0 else None

    report = eventually(settled_report, what=f"the {kind} report with every fee posted")
    (mine,) = [g for g in report["merchants"] if g["merchant_id"] == merchant_id]
    assert mine["currency"] == "CNY"
    assert {name: mine[name] for name in FIGURES} == expected
    finished = expected["succeeded"] + expected["failed"]
    rate = round(expected["succeeded"] / finished, 4) if finished else None
    assert mine["success_rate"] == rate
    check_consistency(report)
    # The platform is shared with other tests: channels and totals hold at least ours.
    for channel in sorted({p["channel"] for p in payments}):
        ours = expected_figures([p for p in payments if p["channel"] == channel])
        (group,) = [
            g for g in report["channels"] if (g["channel"], g["currency"]) == (channel, "CNY")
        ]
        assert all(group[name] >= ours[name] for name in FIGURES), (channel, group, ours)
    (total,) = [t for t in report["totals"] if t["currency"] == "CNY"]
    assert all(total[name] >= expected[name] for name in FIGURES), total
