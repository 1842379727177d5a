"""Listing payments and reading events, scoped to the merchant, paginated by cursor."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from services.common.launcher import PlatformInfo
from tests.e2e.helpers import as_merchant, eventually, new_payment, webhook_lines


def fresh_merchant(info: PlatformInfo) -> httpx.Client:
    onboarded = httpx.post(
        f"{info.api_base_url}/v1/admin/merchants",
        headers={"Authorization": f"Bearer {info.admin_key}"},
        json={"name": "Lister", "single_payment_limit_minor": 100_000},
        timeout=10,
    ).json()
    return as_merchant(info, onboarded["api_key"]["secret"])


def test_payments_are_listed_newest_first_filtered_and_paginated(info: PlatformInfo) -> None:
    with fresh_merchant(info) as merchant:
        order = f"order-{uuid.uuid4().hex[:8]}"
        created = [
            merchant.post("/v1/payments", json=new_payment(amount=100 + i)).json() for i in range(3)
        ]
        declined = merchant.post(
            "/v1/payments", json=new_payment(amount=200_000, order_id=order)
        ).json()
        assert declined["status"] == "failed"
        newest_first = [declined["id"], *reversed([p["id"] for p in created])]

        first = merchant.get("/v1/payments", params={"limit": 3}).json()
        assert [p["id"] for p in first["data"]] == newest_first[:3]
        assert first["has_more"] is True and first["next_cursor"] == newest_first[2]
        second = merchant.get(
            "/v1/payments", params={"limit": 3, "starting_after": first["next_cursor"]}
        ).json()
        assert [p["id"] for p in second["data"]] == newest_first[3:]
        assert second["has_more"] is False and second["next_cursor"] is None

        failed = merchant.get("/v1/payments", params={"status": "failed"}).json()["data"]
        assert [p["id"] for p in failed] == [declined["id"]]
        by_order = merchant.get("/v1/payments", params={"order_id": order}).json()["data"]
        assert [p["id"] for p in by_order] == [declined["id"]]
        later = merchant.get(
            "/v1/payments", params={"created[gte]": declined["created_at"]}
        ).json()["data"]
        assert [p["id"] for p in later] == [declined["id"]]

        bad_cursor = merchant.get("/v1/payments", params={"starting_after": "pay_nope"})
        assert bad_cursor.status_code == 422 and bad_cursor.json()["code"] == "invalid_cursor"
        bad_status = merchant.get("/v1/payments", params={"status": "weird"})
        assert bad_status.status_code == 422


def test_events_api_returns_the_documents_webhooks_carried(
    api: httpx.Client, info: PlatformInfo
) -> None:
    payment = api.post("/v1/payments", json=new_payment()).json()
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200

    def event_of_payment() -> dict[str, Any] | None:
        listed = api.get("/v1/events", params={"type": "payment.succeeded", "limit": 100}).json()
        return next((e for e in listed["data"] if e["data"]["object"]["id"] == payment["id"]), None)

    event = eventually(event_of_payment, what="payment.succeeded in /v1/events")
    assert api.get(f"/v1/events/{event['id']}").json() == event
    assert info.demo_webhook_log is not None
    delivered = eventually(
        lambda: next(
            (
                line["event"]
                for line in webhook_lines(info.demo_webhook_log)  # type: ignore[arg-type]
                if line["event_id"] == event["id"]
            ),
            None,
        ),
        what="the webhook of that event",
    )
    assert delivered == event

    with fresh_merchant(info) as other:
        assert other.get(f"/v1/events/{event['id']}").json()["code"] == "event_not_found"
        assert other.get("/v1/events").json()["data"] == []


def test_a_nul_character_in_a_url_is_an_invalid_request(api: httpx.Client) -> None:
    # Found by the API fuzzer: PostgreSQL text cannot hold NUL, so such a filter or id
    # could never match and must not reach the database.
    for path in ("/v1/payments?order_id=a%00b", "/v1/payments/pay_%00", "/v1/refunds/re%00"):
        answer = api.get(path)
        assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request"), path
