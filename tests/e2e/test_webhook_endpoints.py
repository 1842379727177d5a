"""Merchants manage their webhook endpoints through the API: create (secret shown once),
rotate the secret, change, and delete; another merchant cannot touch them, and private
targets are refused."""

from __future__ import annotations

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_admin, as_merchant


def test_a_merchant_manages_its_webhook_endpoints(info: PlatformInfo) -> None:
    with as_admin(info) as admin:
        onboarded = admin.post(
            "/v1/admin/merchants",
            json={"name": "Hooks", "fee_plans": {"alipay": {"basis_points": 60, "fixed_minor": 0}}},
        ).json()
    with (
        as_merchant(info, onboarded["api_key"]["secret"]) as shop,
        as_merchant(info, info.demo_api_key or "") as other,
    ):
        created = shop.post(
            "/v1/webhook_endpoints",
            json={"url": "http://127.0.0.1:9/hooks", "events": ["payment.succeeded"]},
        )
        assert created.status_code == 201, created.text
        endpoint = created.json()
        path = f"/v1/webhook_endpoints/{endpoint['id']}"

        rotated = shop.post(f"{path}/rotate_secret", json={"overlap_seconds": 60})
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["secret"].startswith("whsec_")
        assert rotated.json()["secret"] != endpoint["secret"]

        changed = shop.patch(path, json={"events": ["*"], "enabled": False})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["events"], changed.json()["enabled"]) == (["*"], False)
        assert "secret" not in changed.json()

        hidden = other.patch(path, json={"enabled": True})
        assert (hidden.status_code, hidden.json()["code"]) == (404, "webhook_endpoint_not_found")
        assert other.delete(path).status_code == 404

        private = shop.patch(path, json={"url": "http://169.254.169.254/latest"})
        assert (private.status_code, private.json()["code"]) == (422, "webhook_target_not_allowed")

        assert shop.delete(path).status_code == 204
        assert shop.get("/v1/webhook_endpoints").json()["data"] == []
        malformed = shop.delete("/v1/webhook_endpoints/not-an-id")
        assert malformed.status_code == 422
    assert httpx.get(f"{info.api_base_url}/v1/webhook_endpoints", timeout=5).status_code == 401
