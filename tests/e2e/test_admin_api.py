"""Operators manage merchants and API keys through the admin API; changes reach the
other services as merchant events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_merchant, eventually, new_payment


@pytest.fixture
def admin(info: PlatformInfo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.admin_key}"},
        timeout=15.0,
    ) as client:
        yield client


def onboard(admin: httpx.Client, **fields: Any) -> dict[str, Any]:
    answer = admin.post("/v1/admin/merchants", json={"name": "Shop", **fields})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _risk_limit(database_url: str, merchant_id: str) -> int | None:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        limit: int | None = await connection.fetchval(
            "SELECT single_payment_limit_minor FROM risk.merchant_limits WHERE merchant_id = $1",
            merchant_id,
        )
        return limit
    finally:
        await connection.close()


def test_onboarding_with_terms_and_a_webhook_endpoint(
    admin: httpx.Client, info: PlatformInfo
) -> None:
    merchant_id = f"mch_{uuid.uuid4().hex[:12]}"
    onboarded = onboard(
        admin,
        merchant_id=merchant_id,
        settlement_terms={"delay_days": 7, "cutoff_time": "18:00", "time_zone": "Asia/Shanghai"},
        payment_expiry_minutes=15,
        webhook_url="http://127.0.0.1:9/webhooks",
    )
    assert onboarded["merchant"]["id"] == merchant_id
    assert onboarded["merchant"]["settlement_terms"]["time_zone"] == "Asia/Shanghai"
    assert onboarded["webhook_endpoint"]["secret"].startswith("whsec_")
    assert onboarded["api_key"]["secret"].startswith("sk_test_")

    fetched = admin.get(f"/v1/admin/merchants/{merchant_id}").json()
    assert fetched == onboarded["merchant"]
    assert (
        admin.post("/v1/admin/merchants", json={"merchant_id": merchant_id, "name": "x"}).json()[
            "code"
        ]
        == "merchant_exists"
    )
    assert admin.get("/v1/admin/merchants/mch_nobody").json()["code"] == "merchant_not_found"
    bad = admin.post("/v1/admin/merchants", json={"name": "x", "channels": ["alipay", "card"]})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_merchant_profile"


def test_a_changed_limit_applies_to_the_next_payment_and_suspension_stops_the_api(
    admin: httpx.Client, info: PlatformInfo
) -> None:
    onboarded = onboard(admin, single_payment_limit_minor=100_000)
    merchant_id = onboarded["merchant"]["id"]
    with as_merchant(info, onboarded["api_key"]["secret"]) as merchant:
        eventually(
            lambda: asyncio.run(_risk_limit(info.database_url, merchant_id)) == 100_000,
            what="risk to learn the onboarding",
        )
        assert merchant.post("/v1/payments", json=new_payment(amount=50_000)).json()["status"] == (
            "requires_payment"
        )

        updated = admin.patch(
            f"/v1/admin/merchants/{merchant_id}", json={"single_payment_limit_minor": 10_000}
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["single_payment_limit_minor"] == 10_000
        assert updated.json()["version"] == onboarded["merchant"]["version"] + 1
        eventually(
            lambda: asyncio.run(_risk_limit(info.database_url, merchant_id)) == 10_000,
            what="risk to learn the new limit",
        )
        declined = merchant.post("/v1/payments", json=new_payment(amount=50_000)).json()
        assert declined["status"] == "failed"
        assert declined["failure"]["rule_ids"] == ["limit.single_payment_amount"]

        admin.patch(f"/v1/admin/merchants/{merchant_id}", json={"status": "suspended"})
        refused = merchant.post("/v1/payments", json=new_payment())
        assert refused.status_code == 403 and refused.json()["code"] == "merchant_suspended"
        admin.patch(f"/v1/admin/merchants/{merchant_id}", json={"status": "active"})
        assert merchant.get("/v1/balance").status_code == 200


def test_api_keys_are_listed_by_prefix_rotated_and_revoked(
    admin: httpx.Client, info: PlatformInfo
) -> None:
    onboarded = onboard(admin)
    merchant_id = onboarded["merchant"]["id"]
    first = onboarded["api_key"]
    second = admin.post(f"/v1/admin/merchants/{merchant_id}/api_keys").json()
    listed = admin.get(f"/v1/admin/merchants/{merchant_id}/api_keys").json()["data"]
    assert [key["id"] for key in listed] == [first["id"], second["id"]]
    assert all("secret" not in key for key in listed)
    assert listed[0]["prefix"] == first["secret"][:12]

    rotated = admin.post(f"/v1/admin/api_keys/{first['id']}/rotate", json={"grace_seconds": 0})
    assert rotated.status_code == 201
    new_secret = rotated.json()["secret"]
    with as_merchant(info, first["secret"]) as old, as_merchant(info, new_secret) as new:
        assert old.get("/v1/balance").json()["code"] == "invalid_api_key"
        assert new.get("/v1/balance").status_code == 200

    assert admin.delete(f"/v1/admin/api_keys/{second['id']}").status_code == 204
    with as_merchant(info, second["secret"]) as revoked:
        assert revoked.get("/v1/balance").status_code == 401
    assert admin.delete("/v1/admin/api_keys/key_nobody").json()["code"] == "api_key_not_found"


def test_a_rotated_key_keeps_working_during_its_grace_period(
    admin: httpx.Client, info: PlatformInfo
) -> None:
    onboarded = onboard(admin)
    key = onboarded["api_key"]
    rotated = admin.post(f"/v1/admin/api_keys/{key['id']}/rotate", json={"grace_seconds": 3600})
    with (
        as_merchant(info, key["secret"]) as old,
        as_merchant(info, rotated.json()["secret"]) as new,
    ):
        assert old.get("/v1/balance").status_code == 200
        assert new.get("/v1/balance").status_code == 200
