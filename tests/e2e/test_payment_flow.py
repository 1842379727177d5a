"""One payment through all five services and the PSP simulator, over HTTP, against the
real broker and PostgreSQL, with every service its own OS process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from schemas import Topic, topic_name
from services.common.launcher import PlatformInfo
from tests.e2e.helpers import (
    balance_of,
    eventually,
    new_payment,
    signed_channel_notification,
    webhook_lines,
)
from tests.support.kafka import read_topic

T = TypeVar("T")


def test_a_paid_payment_succeeds_posts_to_the_ledger_and_is_delivered_by_webhook(
    api: httpx.Client, info: PlatformInfo
) -> None:
    pending_before = balance_of(api, "CNY")["pending"]
    correlation_id = f"corr_e2e_{uuid.uuid4().hex}"
    created = api.post(
        "/v1/payments",
        json=new_payment(),
        headers={"Idempotency-Key": uuid.uuid4().hex, "X-Correlation-Id": correlation_id},
    )
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "requires_payment", payment
    pay_url = payment["next_action"]["url"]
    assert pay_url.startswith(info.psp_base_url)
    assert payment["next_action"]["qr_code"]

    assert httpx.get(pay_url, timeout=5).status_code == 200  # the payer sees the page
    assert httpx.post(pay_url, timeout=5).status_code == 200  # and presses "pay"

    def succeeded() -> dict[str, Any] | None:
        body = api.get(f"/v1/payments/{payment['id']}").json()
        return body if body["status"] == "succeeded" else None

    final = eventually(succeeded, what="payment succeeded")
    assert [event["type"] for event in final["events"]] == [
        "PaymentCreated",
        "PaymentRiskApproved",
        "PaymentActionRequired",
        "PaymentSucceeded",
    ]
    # 1999 at 60 bp is 11.994, rounded half-even to 12: the merchant is owed 1987.
    eventually(
        lambda: balance_of(api, "CNY")["pending"] == pending_before + 1987,
        what="pending balance",
    )

    assert info.demo_webhook_log is not None
    delivery = eventually(
        lambda: next(
            (
                line
                for line in webhook_lines(info.demo_webhook_log)  # type: ignore[arg-type]
                if line["event"] and line["event"]["data"]["object"]["id"] == payment["id"]
            ),
            None,
        ),
        what="webhook delivery",
    )
    assert delivery["verified"] is True
    assert delivery["type"] == "payment.succeeded"
    assert delivery["event"]["data"]["object"]["amount"] == 1999

    # One correlation id follows the payment through every service's JSON log lines.
    assert info.log_dir is not None
    for service in ("gateway", "payment_center", "risk", "ledger", "notifier"):
        log_text = (info.log_dir / f"{service}.log").read_text()
        assert correlation_id in log_text, f"{service} never logged the correlation id"


def test_an_over_limit_payment_is_declined_by_risk_with_the_rule(api: httpx.Client) -> None:
    created = api.post("/v1/payments", json=new_payment(amount=1_000_001))
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "failed", payment
    assert payment["next_action"] is None
    assert payment["failure"]["code"] == "risk_declined"
    assert payment["failure"]["rule_ids"] == ["limit.single_payment_amount"]


def test_the_same_idempotency_key_returns_the_first_payment_and_refuses_another_body(
    api: httpx.Client,
) -> None:
    key = uuid.uuid4().hex
    body = new_payment()
    first = api.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
    again = api.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.post("/v1/payments", json=new_payment(amount=5), headers={"Idempotency-Key": key})
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"amount": 100, "currency": ', "invalid_json"),
        (json.dumps(new_payment(currency="XYZ")).encode(), "unsupported_currency"),
        (json.dumps(new_payment(amount=0)).encode(), "invalid_amount"),
        (json.dumps(new_payment(amount=-5)).encode(), "invalid_amount"),
        (json.dumps(new_payment(amount=10**15)).encode(), "invalid_amount"),
        (json.dumps(new_payment(amount=19.99)).encode(), "invalid_amount"),
        (json.dumps(new_payment(channel="paypal")).encode(), "invalid_request"),
    ],
)
def test_bad_input_gets_a_problem_with_a_stable_code_and_creates_nothing(
    api: httpx.Client, content: bytes, code: str
) -> None:
    answer = api.post("/v1/payments", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == code
    assert problem["status"] == 422 and problem["type"].endswith(code) and problem["detail"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "authentication_required"),
        ({"Authorization": "Bearer sk_test_nope"}, "invalid_api_key"),
    ],
)
def test_missing_or_wrong_api_key_is_refused(
    info: PlatformInfo, headers: dict[str, str], code: str
) -> None:
    answer = httpx.post(
        f"{info.api_base_url}/v1/payments", json=new_payment(), headers=headers, timeout=5
    )
    assert answer.status_code == 401
    assert answer.json()["code"] == code


def test_a_forged_channel_notification_is_rejected_and_changes_nothing(
    api: httpx.Client, info: PlatformInfo
) -> None:
    payment = api.post("/v1/payments", json=new_payment()).json()
    assert payment["status"] == "requires_payment", payment
    forged = {
        "notify_id": uuid.uuid4().hex,
        "notify_time": str(int(time.time())),
        "notify_type": "trade_status_sync",
        "app_id": "payrail_platform",
        "trade_no": "T-forged",
        "out_trade_no": payment["id"],
        "trade_status": "TRADE_SUCCESS",
        "total_amount_minor": "1999",
        "currency": "CNY",
        "gmt_payment": "2026-11-22T10:00:00+00:00",
        "sign_type": "HMAC-SHA256",
        "sign": "0" * 64,
    }
    answer = httpx.post(
        f"{info.connector_base_url}/v1/channels/alipay/notify", data=forged, timeout=5
    )
    assert answer.status_code == 400
    assert answer.text == "fail"
    assert api.get(f"/v1/payments/{payment['id']}").json()["status"] == "requires_payment"


def test_every_service_answers_healthz(info: PlatformInfo, platform: Any) -> None:
    settings = platform.settings
    for port in (
        settings.gateway_port,
        settings.payment_center_port,
        settings.ledger_port,
        settings.risk_port,
        settings.notifier_port,
        settings.psp_port,
    ):
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["status"] == "ok"


def test_duplicate_and_replayed_channel_notifications_record_one_success(
    api: httpx.Client, info: PlatformInfo
) -> None:
    payment = api.post("/v1/payments", json=new_payment()).json()
    assert payment["status"] == "requires_payment", payment
    notify_url = f"{info.connector_base_url}/v1/channels/alipay/notify"
    notification = signed_channel_notification(payment, uuid.uuid4().hex, int(time.time()))
    first = httpx.post(notify_url, data=notification, timeout=5)
    duplicate = httpx.post(notify_url, data=notification, timeout=5)
    assert (first.status_code, first.text) == (200, "success")
    assert (duplicate.status_code, duplicate.text) == (200, "success")

    # A second, differently numbered success for the same trade (out of order, late).
    another = signed_channel_notification(payment, uuid.uuid4().hex, int(time.time()))
    assert httpx.post(notify_url, data=another, timeout=5).text == "success"
    # A captured notification replayed two days later is refused as stale.
    stale = signed_channel_notification(payment, uuid.uuid4().hex, int(time.time()) - 2 * 86_400)
    replayed = httpx.post(notify_url, data=stale, timeout=5)
    assert (replayed.status_code, replayed.text) == (400, "fail")

    def timeline() -> list[str] | None:
        body = api.get(f"/v1/payments/{payment['id']}").json()
        return (
            [event["type"] for event in body["events"]] if body["status"] == "succeeded" else None
        )

    eventually(timeline, what="payment succeeded")
    # Wait until payment_center has consumed both recorded channel successes; only then
    # does "one PaymentSucceeded" prove the second one was ignored.
    eventually(
        lambda: asyncio.run(_channel_successes_consumed(info.database_url, payment["id"])) == 2,
        what="both channel results consumed",
    )
    types = timeline()
    assert types is not None and types.count("PaymentSucceeded") == 1


async def _channel_successes_consumed(database_url: str, payment_id: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM payment_center.inbox WHERE message_id IN ("
            " SELECT message_id FROM gateway.event_store"
            " WHERE stream_id = $1 AND message_type = 'ChannelPaymentSucceeded')",
            payment_id,
        )
        return count
    finally:
        await connection.close()


def test_metrics_report_payment_outcomes_and_consumer_work(
    api: httpx.Client, info: PlatformInfo, platform: Any
) -> None:
    declined = api.post("/v1/payments", json=new_payment(amount=2_000_000)).json()
    assert declined["status"] == "failed"
    metrics = httpx.get(
        f"http://127.0.0.1:{platform.settings.payment_center_port}/metrics", timeout=5
    ).text
    assert 'payrail_payments_finished_total{channel="alipay",status="failed"}' in metrics
    assert 'payrail_messages_consumed_total{consumer="payment_center:risk.decisions"' in metrics
    assert 'payrail_consumer_lag_records{consumer="payment_center:risk.decisions"' in metrics
    gateway_metrics = httpx.get(f"{info.api_base_url}/metrics", timeout=5).text
    assert 'route="/v1/payments",status="201"' in gateway_metrics


def test_merchants_cannot_see_each_other_and_admin_endpoints_refuse_merchant_keys(
    api: httpx.Client, info: PlatformInfo
) -> None:
    payment = api.post("/v1/payments", json=new_payment()).json()
    onboarded = httpx.post(
        f"{info.api_base_url}/v1/admin/merchants",
        headers={"Authorization": f"Bearer {info.admin_key}"},
        json={"name": "Other Shop"},
        timeout=10,
    )
    assert onboarded.status_code == 201, onboarded.text
    other_key = onboarded.json()["api_key"]["secret"]
    assert other_key.startswith("sk_test_")
    other = {"Authorization": f"Bearer {other_key}"}
    seen = httpx.get(f"{info.api_base_url}/v1/payments/{payment['id']}", headers=other, timeout=5)
    assert seen.status_code == 404 and seen.json()["code"] == "payment_not_found"
    balance = httpx.get(f"{info.api_base_url}/v1/balance", headers=other, timeout=5).json()
    assert balance["balances"] == []

    as_merchant = httpx.post(
        f"{info.api_base_url}/v1/admin/merchants",
        headers={"Authorization": f"Bearer {info.demo_api_key}"},
        json={"name": "Sneaky"},
        timeout=5,
    )
    assert as_merchant.status_code == 403
    assert as_merchant.json()["code"] == "admin_key_required"


def test_a_poison_message_is_dead_lettered_and_the_platform_keeps_going(
    api: httpx.Client, info: PlatformInfo, platform: Any
) -> None:
    prefix = platform.service_settings.kafka_topic_prefix
    poison = b'{"command_type": "CreatePayment", "schema_version": 1, "payload": {}}'

    async def publish_and_read_dead_letters() -> list[Any]:
        producer = AIOKafkaProducer(bootstrap_servers=info.kafka_bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic_name(Topic.PAYMENTS_COMMANDS, prefix), poison, key=b"pay_poison"
            )
        finally:
            await producer.stop()
        return await read_topic(
            info.kafka_bootstrap_servers,
            topic_name(Topic.DEAD_LETTERS, prefix),
            until=lambda seen: any(record.value == poison for record in seen),
        )

    dead = [
        record for record in asyncio.run(publish_and_read_dead_letters()) if record.value == poison
    ]
    assert len(dead) == 1
    headers = {key: value.decode() for key, value in dead[0].headers}
    assert headers["dead_letter_reason"].startswith("undecodable: invalid CreatePayment")
    assert headers["dead_letter_consumer"] == "payment_center:payments.commands"
    assert headers["source_topic"] == topic_name(Topic.PAYMENTS_COMMANDS, prefix)

    after = api.post("/v1/payments", json=new_payment())
    assert after.json()["status"] == "requires_payment"


def test_concurrent_requests_with_one_idempotency_key_create_one_payment(
    api: httpx.Client, info: PlatformInfo
) -> None:
    key = uuid.uuid4().hex
    body = new_payment()

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=info.api_base_url,
            headers={"Authorization": f"Bearer {info.demo_api_key}", "Idempotency-Key": key},
            timeout=15,
        ) as client:
            return await asyncio.gather(*(client.post("/v1/payments", json=body) for _ in range(8)))

    answers = asyncio.run(post_all())
    assert all(answer.status_code in (200, 201) for answer in answers), [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    listed = api.get("/v1/payments", params={"order_id": body["order_id"]}).json()["data"]
    assert len(listed) == 1


def test_an_idempotency_key_is_free_again_after_its_retention(
    api: httpx.Client, info: PlatformInfo
) -> None:
    key = uuid.uuid4().hex
    first = api.post("/v1/payments", json=new_payment(), headers={"Idempotency-Key": key}).json()

    async def age_the_key() -> None:
        connection = await asyncpg.connect(info.database_url, timeout=10)
        try:
            await connection.execute(
                "UPDATE gateway.idempotency_keys SET created_at = created_at - interval '25 hours'"
                " WHERE idempotency_key = $1",
                key,
            )
        finally:
            await connection.close()

    asyncio.run(age_the_key())
    again = api.post("/v1/payments", json=new_payment(amount=5), headers={"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first["id"]
