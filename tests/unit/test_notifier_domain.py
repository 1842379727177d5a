"""The notifier's pure rules: webhook types and bodies, subscriptions, the retry schedule."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import new_event
from schemas.common import Channel, Failure, FeePlan
from schemas.payments import (
    PaymentCreated,
    PaymentFailed,
    PaymentFailedPayload,
    PaymentRequest,
    PaymentSucceeded,
    PaymentSucceededPayload,
)
from services.notifier.domain import (
    AttemptOutcome,
    DeliveryStatus,
    InvalidEvents,
    InvalidUrl,
    UnsupportedEvent,
    check_endpoint_url,
    check_subscription,
    decide_after_attempt,
    is_success_status,
    next_attempt_delay_ms,
    subscribes_to,
    webhook_body,
    webhook_event_type,
)
from services.notifier.settings import DEFAULT_RETRY_SCHEDULE_MS, NotifierSettings

OCCURRED_AT = datetime(2024, 5, 29, 16, 26, 40, 750_000, tzinfo=UTC)
FEE_PLAN = FeePlan(basis_points=60, fixed_minor=0)


def terms(**overrides: Any) -> dict[str, Any]:
    return {
        "order_id": f"order-{uuid.uuid4().hex[:8]}",
        "amount_minor": 12_345,
        "currency": "CNY",
        "channel": Channel.ALIPAY,
        "description": "Tea set · 茶具",
        "fee_plan": FEE_PLAN,
        **overrides,
    }


def envelope(merchant_id: str, payment_id: str) -> dict[str, Any]:
    return {
        "aggregate_id": payment_id,
        "aggregate_version": 3,
        "merchant_id": merchant_id,
        "producer": "payment_center",
        "occurred_at": OCCURRED_AT,
        "correlation_id": f"corr-{payment_id}",
        "causation_id": None,
    }


def payment_succeeded(merchant_id: str = "mch_a", payment_id: str = "pay_1") -> PaymentSucceeded:
    payload = PaymentSucceededPayload(
        **terms(), channel_trade_id="2024052922001", paid_at=OCCURRED_AT
    )
    return new_event(PaymentSucceeded, payload, **envelope(merchant_id, payment_id))


def payment_failed(merchant_id: str = "mch_a", payment_id: str = "pay_2") -> PaymentFailed:
    failure = Failure(code="risk_rejected", message="Blocked by rule", rule_ids=("r1", "r7"))
    payload = PaymentFailedPayload(**terms(channel=Channel.CARD), failure=failure)
    return new_event(PaymentFailed, payload, **envelope(merchant_id, payment_id))


# Webhook types and bodies -----------------------------------------------------------------


def test_event_classes_map_to_dotted_webhook_types() -> None:
    assert webhook_event_type(payment_succeeded()) == "payment.succeeded"
    assert webhook_event_type(payment_failed()) == "payment.failed"


def test_an_event_without_a_webhook_type_is_a_wiring_mistake() -> None:
    created = new_event(PaymentCreated, PaymentRequest(**terms()), **envelope("mch_a", "pay_3"))
    with pytest.raises(UnsupportedEvent):
        webhook_event_type(created)
    with pytest.raises(UnsupportedEvent):
        webhook_body(created)


def test_the_succeeded_body_has_the_documented_shape() -> None:
    event = payment_succeeded(merchant_id="mch_tea", payment_id="pay_abc")
    document = json.loads(webhook_body(event))
    assert document == {
        "id": str(event.event_id),
        "type": "payment.succeeded",
        "created": 1_717_000_000,  # occurred_at in whole Unix seconds
        "livemode": False,
        "data": {
            "object": {
                "id": "pay_abc",
                "object": "payment",
                "merchant_id": "mch_tea",
                "order_id": event.payload.order_id,
                "amount": 12_345,
                "currency": "CNY",
                "channel": "alipay",
                "description": "Tea set · 茶具",
                "status": "succeeded",
                "failure": None,
            }
        },
    }


def test_the_failed_body_carries_the_failure() -> None:
    document = json.loads(webhook_body(payment_failed()))
    payment = document["data"]["object"]
    assert document["type"] == "payment.failed"
    assert payment["status"] == "failed"
    assert payment["channel"] == "card"
    assert payment["failure"] == {
        "code": "risk_rejected",
        "message": "Blocked by rule",
        "rule_ids": ["r1", "r7"],
    }


def test_the_body_is_compact_utf8_and_the_same_every_time() -> None:
    event = payment_succeeded()
    body = webhook_body(event)
    assert body == webhook_body(event)
    assert b": " not in body and b", " not in body
    assert "茶具".encode() in body  # UTF-8, not \\u escapes


# Subscriptions and endpoint URLs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("subscribed", "event_type", "expected"),
    [
        (["*"], "payment.succeeded", True),
        (["*"], "payment.failed", True),
        (["payment.succeeded"], "payment.succeeded", True),
        (["payment.succeeded"], "payment.failed", False),
        (["payment.failed", "payment.succeeded"], "payment.failed", True),
    ],
)
def test_subscription_matching(subscribed: list[str], event_type: str, expected: bool) -> None:
    assert subscribes_to(subscribed, event_type) is expected


def test_a_subscription_keeps_order_and_drops_duplicates() -> None:
    assert check_subscription(["payment.failed", "payment.succeeded", "payment.failed"]) == (
        "payment.failed",
        "payment.succeeded",
    )
    assert check_subscription(["*"]) == ("*",)


@pytest.mark.parametrize(
    "events", [[], ["payment.refunded"], ["PaymentSucceeded"], ["*", "payment.failed"]]
)
def test_an_invalid_subscription_is_rejected(events: list[str]) -> None:
    with pytest.raises(InvalidEvents) as error:
        check_subscription(events)
    assert error.value.code == "invalid_events"


@pytest.mark.parametrize(
    "url",
    ["https://shop.example/webhooks", "http://127.0.0.1:8200/webhooks", "https://[::1]:8443/h"],
)
def test_an_http_url_with_a_host_is_accepted(url: str) -> None:
    assert check_endpoint_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://shop.example/webhooks",
        "shop.example/webhooks",
        "https://",
        "https:///path",
        "https://shop.example:port/",
        "https://shop.example/with space",
        " https://shop.example/",
        "javascript:alert(1)",
        "https://shop.example/" + "a" * 2048,
    ],
)
def test_a_url_that_is_not_http_with_a_host_is_rejected(url: str) -> None:
    with pytest.raises(InvalidUrl) as error:
        check_endpoint_url(url)
    assert error.value.code == "invalid_url"


# Retry schedule ---------------------------------------------------------------------------


def test_the_default_schedule_is_the_documented_one() -> None:
    assert NotifierSettings().webhook_retry_schedule_ms == [
        0,
        5_000,
        300_000,
        1_800_000,
        7_200_000,
        18_000_000,
        36_000_000,
        36_000_000,
    ]
    assert list(DEFAULT_RETRY_SCHEDULE_MS) == NotifierSettings().webhook_retry_schedule_ms


def test_the_first_attempt_is_immediate_and_each_later_one_follows_the_schedule() -> None:
    schedule = [0, 100, 200, 400]
    assert [next_attempt_delay_ms(count, schedule) for count in range(4)] == schedule


def test_the_schedule_is_exhausted_after_one_attempt_per_entry() -> None:
    schedule = [0, 100, 200, 400]
    assert next_attempt_delay_ms(4, schedule) is None
    assert next_attempt_delay_ms(50, schedule) is None
    assert next_attempt_delay_ms(1, [0]) is None


def test_a_negative_attempt_count_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="attempt_count"):
        next_attempt_delay_ms(-1, [0])


def test_after_an_attempt_success_ends_the_delivery() -> None:
    assert decide_after_attempt(4, True, [0, 100, 200, 400]) == AttemptOutcome(
        DeliveryStatus.SUCCEEDED, None
    )


def test_after_a_failed_attempt_the_next_one_is_scheduled_until_the_schedule_runs_out() -> None:
    schedule = [0, 100, 200, 400]
    assert decide_after_attempt(1, False, schedule) == AttemptOutcome(DeliveryStatus.PENDING, 100)
    assert decide_after_attempt(3, False, schedule) == AttemptOutcome(DeliveryStatus.PENDING, 400)
    assert decide_after_attempt(4, False, schedule) == AttemptOutcome(DeliveryStatus.FAILED, None)


def test_deciding_without_an_attempt_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="attempt_count"):
        decide_after_attempt(0, False, [0])


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [(199, False), (200, True), (204, True), (299, True), (301, False), (500, False)],
)
def test_only_2xx_acknowledges(status_code: int, expected: bool) -> None:
    assert is_success_status(status_code) is expected


def test_a_schedule_setting_must_have_entries_within_bounds() -> None:
    with pytest.raises(ValueError, match="webhook_retry_schedule_ms"):
        NotifierSettings(webhook_retry_schedule_ms=[])
    with pytest.raises(ValueError, match="webhook_retry_schedule_ms"):
        NotifierSettings(webhook_retry_schedule_ms=[0, -1])
