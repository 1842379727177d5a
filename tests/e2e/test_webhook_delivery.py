"""Webhook delivery with real HTTP receivers on 127.0.0.1, against the whole platform:
retries until success with every attempt logged, an always-failing endpoint disabled
(with its event and an ops alert), a slow receiver that cannot delay another merchant,
a notifier killed in the middle of a retry schedule, and resend and replay.

Every request any receiver gets is verified with `services.notifier.signature.verify`,
the helper payrail ships to merchants. The platform runs with the retry schedule
[0, 200, 500, 1000, 2000, 4000] ms, endpoints disabled after 2.5 s of failures and two
attempts in flight per endpoint (tests/e2e/conftest.py).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.common.launcher import Platform, PlatformInfo
from tests.e2e.conftest import OPS_PATH
from tests.e2e.helpers import as_admin, as_merchant, eventually, new_payment
from tests.support.webhook_receiver import Route, WebhookReceiver

ENDPOINT_CONCURRENCY_MAX = 2  # PAYRAIL_WEBHOOK_ENDPOINT_CONCURRENCY_MAX in the conftest
# Long enough for a lease to run out (webhook timeout + margin) should a kill land in the
# middle of an attempt; the assertions do not depend on how long it takes.
RESTART_DEADLINE_S = 90.0


@dataclass
class Shop:
    """A merchant of its own, with one webhook endpoint pointing at a receiver path."""

    api: httpx.Client
    endpoint: dict[str, Any]
    path: str

    def create_a_payment(self) -> str:
        created = self.api.post(
            "/v1/payments",
            json=new_payment(),
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert created.status_code == 201, created.text
        payment_id: str = created.json()["id"]
        return payment_id

    def cancel(self, payment_id: str) -> str:
        canceled = self.api.post(f"/v1/payments/{payment_id}/cancel", json={"reason": "test"})
        assert canceled.status_code == 200, canceled.text
        return payment_id

    def cancel_a_payment(self) -> str:
        """Create a payment and cancel it: a `payment.canceled` event. Returns its id."""
        return self.cancel(self.create_a_payment())

    def event_of(self, payment_id: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            events = self.api.get("/v1/events", params={"type": "payment.canceled"}).json()
            return next(
                (e for e in events["data"] if e["data"]["object"]["id"] == payment_id), None
            )

        return eventually(find, what=f"payment.canceled of {payment_id}")

    def deliveries(self) -> list[dict[str, Any]]:
        answer = self.api.get(f"/v1/webhook_endpoints/{self.endpoint['id']}/deliveries")
        assert answer.status_code == 200, answer.text
        data: list[dict[str, Any]] = answer.json()["data"]
        return data

    def endpoint_now(self) -> dict[str, Any]:
        listed = self.api.get("/v1/webhook_endpoints").json()["data"]
        return next(e for e in listed if e["id"] == self.endpoint["id"])


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as serving:
        yield serving


@pytest.fixture
def new_shop(info: PlatformInfo, receiver: WebhookReceiver) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def make(route: Route) -> Shop:
        with as_admin(info) as admin:
            onboarded = admin.post(
                "/v1/admin/merchants",
                json={
                    "name": "Webhook shop",
                    "fee_plans": {"alipay": {"basis_points": 60, "fixed_minor": 0}},
                },
            )
            assert onboarded.status_code == 201, onboarded.text
        api = as_merchant(info, onboarded.json()["api_key"]["secret"])
        clients.append(api)
        path = f"/hooks/{uuid.uuid4().hex[:12]}"
        created = api.post(
            "/v1/webhook_endpoints",
            json={"url": receiver.url(path), "events": ["payment.canceled"]},
        )
        assert created.status_code == 201, created.text
        endpoint = created.json()
        route.secrets = [endpoint["secret"]]
        receiver.route(path, route)
        return Shop(api=api, endpoint=endpoint, path=path)

    yield make
    for client in clients:
        client.close()


def test_a_receiver_failing_three_times_gets_the_event_once_on_the_fourth_attempt(
    new_shop: Any, receiver: WebhookReceiver
) -> None:
    shop: Shop = new_shop(Route(fail_first=3))
    event = shop.event_of(shop.cancel_a_payment())

    def succeeded() -> dict[str, Any] | None:
        deliveries = shop.deliveries()
        return deliveries[0] if deliveries and deliveries[0]["status"] == "succeeded" else None

    delivery = eventually(succeeded, what="the delivery to succeed")
    assert delivery["event_id"] == event["id"]
    assert delivery["origin"] == "event"
    assert [a["attempt_number"] for a in delivery["attempts"]] == [1, 2, 3, 4]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500, 200]
    assert [a["succeeded"] for a in delivery["attempts"]] == [False, False, False, True]
    assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])
    assert delivery["attempts"][0]["response_excerpt"] == '{"error": "try later"}'

    requests = receiver.received(shop.path)
    assert [r.status for r in requests] == [500, 500, 500, 200]  # once successfully
    assert {r.event_id for r in requests} == {event["id"]}
    assert all(r.verified for r in requests), [r.verification_error for r in requests]
    assert {r.body for r in requests} == {requests[0].body}  # the same bytes every time
    assert json.loads(requests[0].body) == event  # the document GET /v1/events serves
    assert shop.endpoint_now()["enabled"] is True  # three failures are not a broken endpoint


def test_a_receiver_that_always_fails_is_disabled_with_an_event_and_an_ops_alert(
    new_shop: Any, receiver: WebhookReceiver, ops_receiver: WebhookReceiver
) -> None:
    route = Route(always_fail=True)
    shop: Shop = new_shop(route)
    event = shop.event_of(shop.cancel_a_payment())

    def disabled() -> dict[str, Any] | None:
        endpoint = shop.endpoint_now()
        return endpoint if not endpoint["enabled"] else None

    endpoint = eventually(disabled, what="the endpoint to be disabled")
    assert endpoint["disabled_reason"].startswith("every delivery attempt failed for")
    assert endpoint["disabled_at"] is not None
    attempts_when_disabled = len(receiver.received(shop.path))
    assert attempts_when_disabled >= 2
    assert all(r.verified for r in receiver.received(shop.path))

    # The merchant sees why, in its events.
    def disabled_event() -> dict[str, Any] | None:
        events = shop.api.get("/v1/events", params={"type": "webhook_endpoint.disabled"}).json()
        return next(iter(events["data"]), None)

    notice = eventually(disabled_event, what="webhook_endpoint.disabled")
    assert notice["data"]["object"]["id"] == endpoint["id"]
    assert notice["data"]["object"]["disabled_reason"] == endpoint["disabled_reason"]

    # Operations get the same event, signed, on the ops webhook.
    def alerted() -> bytes | None:
        return next(
            (
                r.body
                for r in ops_receiver.received(OPS_PATH)
                if json.loads(r.body)["id"] == notice["id"]
            ),
            None,
        )

    alert = json.loads(eventually(alerted, what="the ops alert"))
    assert alert["type"] == "webhook_endpoint.disabled"
    assert alert["data"]["object"]["url"] == receiver.url(shop.path)
    assert all(r.verified for r in ops_receiver.received(OPS_PATH))

    # A disabled endpoint gets nothing more; its delivery waits instead of failing...
    (delivery,) = shop.deliveries()
    assert delivery["status"] == "pending"
    assert len(receiver.received(shop.path)) == attempts_when_disabled

    # ...and once the merchant fixes its receiver and enables the endpoint, it arrives.
    route.always_fail = False
    enabled = shop.api.patch(f"/v1/webhook_endpoints/{endpoint['id']}", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["disabled_at"], enabled.json()["disabled_reason"]) == (None, None)
    eventually(lambda: shop.deliveries()[0]["status"] == "succeeded", what="the waiting delivery")
    assert receiver.received(shop.path)[-1].status == 200
    assert receiver.received(shop.path)[-1].event_id == event["id"]


def test_a_slow_receiver_does_not_delay_another_merchants_webhooks(
    new_shop: Any, receiver: WebhookReceiver
) -> None:
    release = threading.Event()
    slow: Shop = new_shop(Route(hold=release))
    fast: Shop = new_shop(Route())
    fast_payment = fast.create_a_payment()
    slow_payments = [slow.create_a_payment() for _ in range(ENDPOINT_CONCURRENCY_MAX + 2)]
    try:
        for payment_id in slow_payments:
            slow.cancel(payment_id)
        eventually(
            lambda: receiver.arrived(slow.path) >= ENDPOINT_CONCURRENCY_MAX,
            what="the slow receiver to hold its requests",
        )
        fast_event = fast.event_of(fast.cancel(fast_payment))
        arrived = eventually(
            lambda: next(iter(receiver.received(fast.path)), None), what="the fast webhook"
        )
        # Still no attempt to the slow receiver has finished: the other merchant's webhook
        # did not wait for them (nor for their timeout), and the slow endpoint holds no more
        # than its own share of the delivery slots.
        slow_deliveries = slow.deliveries()
        assert all(d["attempts"] == [] for d in slow_deliveries), slow_deliveries
        assert arrived.event_id == fast_event["id"]
        assert arrived.in_flight_elsewhere.get(slow.path) == ENDPOINT_CONCURRENCY_MAX
        assert receiver.in_flight_max(slow.path) == ENDPOINT_CONCURRENCY_MAX
        assert receiver.arrived(slow.path) == ENDPOINT_CONCURRENCY_MAX
    finally:
        release.set()
    # Once it answers, the rest of its deliveries go out too.
    eventually(
        lambda: (
            all(d["status"] == "succeeded" for d in slow.deliveries())
            and len(slow.deliveries()) == ENDPOINT_CONCURRENCY_MAX + 2
        ),
        what="the slow receiver's deliveries",
    )
    assert all(r.verified for r in receiver.received(slow.path))


def test_a_notifier_killed_in_the_middle_of_a_retry_schedule_loses_no_delivery(
    new_shop: Any, receiver: WebhookReceiver, platform: Platform
) -> None:
    shop: Shop = new_shop(Route(fail_first=3))
    event = shop.event_of(shop.cancel_a_payment())
    # Three attempts failed; the fourth is due a second after the third.
    eventually(
        lambda: (shop.deliveries() or [{"attempt_count": 0}])[0]["attempt_count"] >= 3,
        what="three failed attempts",
    )
    platform.restart(
        "notifier", ready_url=f"http://127.0.0.1:{platform.settings.notifier_port}/readyz"
    )

    def succeeded() -> dict[str, Any] | None:
        deliveries = shop.deliveries()
        return deliveries[0] if deliveries[0]["status"] == "succeeded" else None

    delivery = eventually(succeeded, timeout_s=RESTART_DEADLINE_S, what="delivery after restart")
    numbers = [a["attempt_number"] for a in delivery["attempts"]]
    assert numbers == list(range(1, len(numbers) + 1))  # no attempt lost or repeated
    assert [a["succeeded"] for a in delivery["attempts"]][-1] is True
    requests = receiver.received(shop.path)
    assert [r.status for r in requests][-1] == 200
    assert sum(r.status == 200 for r in requests) == 1
    assert {r.event_id for r in requests} == {event["id"]}


def test_an_event_is_resent_and_a_time_range_is_replayed_as_new_deliveries(
    new_shop: Any, receiver: WebhookReceiver
) -> None:
    shop: Shop = new_shop(Route())
    before = datetime.now(UTC) - timedelta(seconds=1)
    events = [shop.event_of(shop.cancel_a_payment()) for _ in range(2)]
    eventually(lambda: len(receiver.received(shop.path)) == 2, what="the first two deliveries")

    resent = shop.api.post(f"/v1/events/{events[0]['id']}/resend", json={})
    assert (resent.status_code, resent.json()) == (202, {"queued": 1}), resent.text
    eventually(lambda: len(receiver.received(shop.path)) == 3, what="the resent event")
    assert receiver.received(shop.path)[2].event_id == events[0]["id"]

    window = {
        "from": before.isoformat(),
        "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
    }
    replayed = shop.api.post(f"/v1/webhook_endpoints/{shop.endpoint['id']}/replay", json=window)
    assert (replayed.status_code, replayed.json()) == (202, {"queued": 2}), replayed.text
    eventually(lambda: len(receiver.received(shop.path)) == 5, what="the replayed events")
    # Both are due at once and sent in parallel: they may arrive in either order.
    assert sorted(r.event_id for r in receiver.received(shop.path)[3:]) == sorted(
        e["id"] for e in events
    )
    assert all(r.verified for r in receiver.received(shop.path))

    of_first = shop.api.get(f"/v1/events/{events[0]['id']}/deliveries").json()["data"]
    assert sorted(d["origin"] for d in of_first) == ["event", "replay", "resend"]
    assert all(d["status"] == "succeeded" for d in of_first)

    page = shop.api.get(
        f"/v1/webhook_endpoints/{shop.endpoint['id']}/deliveries", params={"limit": 3}
    ).json()
    assert (len(page["data"]), page["has_more"]) == (3, True)
    rest = shop.api.get(
        f"/v1/webhook_endpoints/{shop.endpoint['id']}/deliveries",
        params={"limit": 3, "starting_after": page["data"][-1]["id"]},
    ).json()
    assert (len(rest["data"]), rest["has_more"]) == (2, False)
    assert {d["id"] for d in page["data"]}.isdisjoint({d["id"] for d in rest["data"]})

    # Bad requests are problem documents with stable codes.
    assert shop.api.post(f"/v1/events/{uuid.uuid4()}/resend").json()["code"] == "event_not_found"
    backwards = {"from": window["to"], "to": window["from"]}
    refused = shop.api.post(f"/v1/webhook_endpoints/{shop.endpoint['id']}/replay", json=backwards)
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_replay_range")
    other = shop.api.post("/v1/webhook_endpoints/we_unknown/replay", json=window)
    assert (other.status_code, other.json()["code"]) == (404, "webhook_endpoint_not_found")
    stale = shop.api.get(
        f"/v1/webhook_endpoints/{shop.endpoint['id']}/deliveries",
        params={"starting_after": "wd_unknown"},
    )
    assert (stale.status_code, stale.json()["code"]) == (422, "invalid_cursor")
