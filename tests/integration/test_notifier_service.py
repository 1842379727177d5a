"""The notifier against a real broker, a real PostgreSQL and a real HTTP receiver: a
redelivered event makes one delivery, failed attempts are retried on the persisted
schedule until it is exhausted, and the final request verifies with the endpoint's
secret."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from faststream.kafka import KafkaBroker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas import Topic, encode, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.payments import PaymentSucceeded, PaymentSucceededPayload
from schemas.risk import RiskAlertKind, RiskAlertRaised, RiskAlertRaisedPayload
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.dead_letters import DeadLetter, dead_letter_recorded
from services.common.infrastructure import free_port
from services.common.settings import ServiceSettings
from services.notifier.app import create_app
from services.notifier.delivery import deliver_due
from services.notifier.delivery_log import list_deliveries
from services.notifier.egress import webhook_client
from services.notifier.handlers import (
    create_endpoint as register_endpoint,
)
from services.notifier.handlers import enqueue_deliveries
from services.notifier.settings import NotifierSettings
from services.notifier.signature import verify

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
FAILURES_BEFORE_SUCCESS = 2


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]  # Lower-case names, as Starlette presents them.
    body: bytes


class Receiver:
    """A merchant's webhook receiver: `/hooks` fails twice then succeeds, `/ok` always
    succeeds, `/stuck` answers only once the test releases it."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.release_stuck = asyncio.Event()

    def on(self, path: str) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.path == path]

    async def _record(self, request: Request) -> None:
        body = await request.body()
        self.requests.append(ReceivedRequest(request.url.path, dict(request.headers), body))

    async def hooks(self, request: Request) -> Response:
        await self._record(request)
        if len(self.on("/hooks")) <= FAILURES_BEFORE_SUCCESS:
            return Response("receiver is down", status_code=500)
        return Response("thanks", status_code=200)

    async def ok(self, request: Request) -> Response:
        await self._record(request)
        return Response("ok", status_code=200)

    async def stuck(self, request: Request) -> Response:
        await self._record(request)
        await self.release_stuck.wait()
        return Response("too late", status_code=200)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/hooks", self.hooks, methods=["POST"]),
                Route("/ok", self.ok, methods=["POST"]),
                Route("/stuck", self.stuck, methods=["POST"]),
            ]
        )


@contextlib.asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    """Serve `receiver` over real HTTP on 127.0.0.1 for the duration; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        receiver.app(),
        host="127.0.0.1",
        port=port,
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), "receiver started")
        if task.done():
            task.result()  # Raises the reason the server could not start.
        yield f"http://127.0.0.1:{port}"
    finally:
        receiver.release_stuck.set()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def poll(fetch: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str) -> Any:
    """Call `fetch` until `done(result)` holds; fail after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = await fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {result!r}")
        await asyncio.sleep(0.05)


def payment_succeeded(merchant_id: str) -> PaymentSucceeded:
    payment_id = f"pay_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    payload = PaymentSucceededPayload(
        order_id=f"order-{uuid.uuid4().hex[:8]}",
        amount_minor=2_500,
        currency="CNY",
        channel=Channel.ALIPAY,
        description="integration test",
        fee_plan=FeePlan(basis_points=60, fixed_minor=0),
        channel_trade_id=f"trade-{uuid.uuid4().hex[:8]}",
        paid_at=now,
    )
    return new_event(
        PaymentSucceeded,
        payload,
        aggregate_id=payment_id,
        aggregate_version=3,
        merchant_id=merchant_id,
        producer="payment_center",
        occurred_at=now,
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


@pytest.fixture
async def publisher(settings: ServiceSettings) -> AsyncIterator[KafkaBroker]:
    broker = build_broker(settings, client_id="notifier-test-publisher")
    await broker.connect()
    yield broker
    await broker.stop()


async def create_endpoint(
    api: httpx.AsyncClient, merchant_id: str, url: str, events: list[str]
) -> dict[str, Any]:
    answer = await api.post(
        "/internal/v1/webhook_endpoints",
        json={"merchant_id": merchant_id, "url": url, "events": events},
    )
    assert answer.status_code == 201, answer.text
    endpoint: dict[str, Any] = answer.json()
    return endpoint


async def deliveries_of(
    api: httpx.AsyncClient, merchant_id: str, event_id: uuid.UUID
) -> list[dict[str, Any]]:
    answer = await api.get(
        "/internal/v1/deliveries", params={"merchant_id": merchant_id, "event_id": str(event_id)}
    )
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


async def test_a_redelivered_event_is_delivered_once_with_retries_and_a_valid_signature(
    settings: ServiceSettings, publisher: KafkaBroker
) -> None:
    notifier_settings = NotifierSettings(
        **settings.model_dump(),
        webhook_allowed_hosts=["127.0.0.1"],
        webhook_retry_schedule_ms=[0, 100, 200, 400],
        delivery_poll_interval_ms=50,
    )
    app = create_app(notifier_settings)
    receiver = Receiver()
    merchant_id = f"mch_{uuid.uuid4().hex[:8]}"
    sentinel_merchant_id = f"mch_{uuid.uuid4().hex[:8]}"
    async with (
        serving(receiver) as receiver_url,
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://notifier"
        ) as api,
    ):
        endpoint = await create_endpoint(
            api, merchant_id, f"{receiver_url}/hooks", ["payment.succeeded"]
        )
        assert endpoint["id"].startswith("we_")
        assert endpoint["secret"].startswith("whsec_")
        assert endpoint["enabled"] is True
        assert endpoint["events"] == ["payment.succeeded"]
        await create_endpoint(api, sentinel_merchant_id, f"{receiver_url}/ok", ["*"])

        listed = await api.get(
            "/internal/v1/webhook_endpoints", params={"merchant_id": merchant_id}
        )
        assert listed.status_code == 200
        assert [item["id"] for item in listed.json()["data"]] == [endpoint["id"]]
        assert "secret" not in listed.json()["data"][0]

        event = payment_succeeded(merchant_id)
        # The sentinel shares the event's key, so it lands in the same partition and is
        # consumed after both copies of the event: once its delivery exists, the
        # duplicate has certainly been consumed too.
        sentinel = payment_succeeded(sentinel_merchant_id)
        topic = topic_name(Topic.PAYMENTS_EVENTS, notifier_settings.kafka_topic_prefix)
        key = event.aggregate_id.encode()
        for message in (event, event, sentinel):
            await publisher.publish(encode(message), topic=topic, key=key)

        await poll(
            lambda: deliveries_of(api, sentinel_merchant_id, sentinel.event_id),
            lambda found: len(found) == 1,
            "the sentinel's delivery",
        )
        deliveries = await poll(
            lambda: deliveries_of(api, merchant_id, event.event_id),
            lambda found: len(found) >= 1 and found[0]["status"] != "pending",
            "the delivery to finish",
        )
        pool = app.state.context.pool
        stored = await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE event_id = $1", event.event_id
        )

    assert stored == 1
    assert len(deliveries) == 1
    delivery = deliveries[0]
    assert delivery["status"] == "succeeded"
    assert delivery["endpoint_id"] == endpoint["id"]
    assert delivery["event_type"] == "payment.succeeded"
    assert delivery["attempt_count"] == 3
    assert delivery["next_attempt_at"] is None
    assert delivery["delivered_at"] is not None
    attempts = delivery["attempts"]
    assert [attempt["attempt_number"] for attempt in attempts] == [1, 2, 3]
    assert [attempt["status_code"] for attempt in attempts] == [500, 500, 200]
    assert [attempt["succeeded"] for attempt in attempts] == [False, False, True]
    assert [attempt["response_excerpt"] for attempt in attempts] == [
        "receiver is down",
        "receiver is down",
        "thanks",
    ]
    assert all(attempt["latency_ms"] >= 0 for attempt in attempts)
    attempted_at = [datetime.fromisoformat(attempt["attempted_at"]) for attempt in attempts]
    # The schedule's waits (100 ms, then 200 ms) count from the end of the previous attempt.
    assert (attempted_at[1] - attempted_at[0]).total_seconds() >= 0.1
    assert (attempted_at[2] - attempted_at[1]).total_seconds() >= 0.2

    received = receiver.on("/hooks")
    assert len(received) == 3
    assert len({request.body for request in received}) == 1, "every retry sends the same bytes"
    final = received[-1]
    verify(
        final.headers["payrail-signature"], final.body, [endpoint["secret"]], now=int(time.time())
    )
    assert final.headers["payrail-event-id"] == str(event.event_id)
    assert final.headers["content-type"] == "application/json"
    assert final.headers["user-agent"] == "payrail-webhooks/0.1"
    document = json.loads(final.body)
    assert document["id"] == str(event.event_id)
    assert document["type"] == "payment.succeeded"
    assert document["data"]["object"]["id"] == event.aggregate_id
    assert document["data"]["object"]["amount"] == 2_500
    assert document["data"]["object"]["status"] == "succeeded"
    assert len(receiver.on("/ok")) == 1


async def test_bad_endpoint_input_is_a_problem_document() -> None:
    # Input is validated before the database is touched, so this needs no lifespan; a
    # second notifier start in the same consumer group would also wait for a rebalance.
    app = create_app(NotifierSettings())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notifier"
    ) as api:
        bad_url = await api.post(
            "/internal/v1/webhook_endpoints",
            json={"merchant_id": "mch_x", "url": "ftp://shop.example/h", "events": ["*"]},
        )
        bad_host = await api.post(
            "/internal/v1/webhook_endpoints",
            json={"merchant_id": "mch_x", "url": "https://xn--/h", "events": ["*"]},
        )
        bad_events = await api.post(
            "/internal/v1/webhook_endpoints",
            json={"merchant_id": "mch_x", "url": "https://shop.example/h", "events": ["nope"]},
        )
        missing_field = await api.post(
            "/internal/v1/webhook_endpoints", json={"merchant_id": "mch_x", "events": ["*"]}
        )
        private = [
            await api.post(
                "/internal/v1/webhook_endpoints",
                json={"merchant_id": "mch_x", "url": url, "events": ["*"]},
            )
            for url in (
                "http://127.0.0.1:8200/hooks",
                "http://169.254.169.254/latest/meta-data",
                "https://10.1.2.3/h",
                "http://[::1]/h",
                "http://[::ffff:192.168.0.1]/h",
                "http://localhost/h",
            )
        ]
    assert bad_url.status_code == 422
    assert bad_url.headers["content-type"] == "application/problem+json"
    problem = bad_url.json()
    assert problem["code"] == "invalid_url"
    assert problem["status"] == 422
    assert set(problem) == {"type", "title", "status", "detail", "code"}
    assert bad_host.status_code == 422
    assert bad_host.json()["code"] == "invalid_url"
    assert bad_events.status_code == 422
    assert bad_events.json()["code"] == "invalid_events"
    assert missing_field.status_code == 422
    assert missing_field.json()["code"] == "invalid_request"
    # No SSRF: loopback, metadata, private and mapped addresses are refused by default.
    assert {(answer.status_code, answer.json()["code"]) for answer in private} == {
        (422, "webhook_target_not_allowed")
    }


async def test_the_worker_retries_on_the_persisted_schedule_until_it_is_exhausted(
    settings: ServiceSettings, notifier_pool: asyncpg.Pool
) -> None:
    clock = FixedClock(datetime.now(UTC))
    notifier_settings = NotifierSettings(
        **settings.model_dump(),
        webhook_retry_schedule_ms=[0, 1_000],
        webhook_timeout_ms=200,
        webhook_allowed_hosts=["127.0.0.1"],
    )
    merchant_id = f"mch_{uuid.uuid4().hex[:8]}"
    receiver = Receiver()
    async with (
        serving(receiver) as receiver_url,
        webhook_client(notifier_settings) as http_client,
    ):
        refused = await register_endpoint(
            notifier_pool,
            merchant_id=merchant_id,
            url=f"http://127.0.0.1:{free_port()}/nothing-listens-here",
            events=["payment.succeeded"],
            clock=clock,
            allowed_hosts=["127.0.0.1"],
        )
        stuck = await register_endpoint(
            notifier_pool,
            merchant_id=merchant_id,
            url=f"{receiver_url}/stuck",
            events=["*"],
            clock=clock,
            allowed_hosts=["127.0.0.1"],
        )
        for events in (["payment.failed"], ["*"]):  # not subscribed; disabled below
            unused = await register_endpoint(
                notifier_pool,
                merchant_id=merchant_id,
                url=f"{receiver_url}/ok",
                events=events,
                clock=clock,
                allowed_hosts=["127.0.0.1"],
            )
        await notifier_pool.execute(
            "UPDATE webhook_endpoints SET enabled = false WHERE endpoint_id = $1",
            unused.endpoint.endpoint_id,
        )

        event = payment_succeeded(merchant_id)
        for _ in range(2):  # Even past the inbox, one event makes one delivery per endpoint.
            async with notifier_pool.acquire() as connection, connection.transaction():
                await enqueue_deliveries(connection, event, clock=clock)

        async def round_() -> int:
            return await deliver_due(notifier_pool, http_client, notifier_settings, clock)

        assert await round_() == 2
        first = await list_deliveries(notifier_pool, merchant_id=merchant_id)
        assert sorted(d.endpoint_id for d in first) == sorted(
            [refused.endpoint.endpoint_id, stuck.endpoint.endpoint_id]
        )
        for delivery in first:
            assert delivery.status == "pending"
            assert delivery.attempt_count == 1
            assert delivery.next_attempt_at == clock.now() + timedelta(seconds=1)
            assert delivery.attempts[0].status_code is None
            assert delivery.attempts[0].succeeded is False
        errors = {d.endpoint_id: d.attempts[0].error or "" for d in first}
        assert errors[refused.endpoint.endpoint_id].startswith("ConnectError")
        assert errors[stuck.endpoint.endpoint_id] == "timed out after 200 ms"

        assert await round_() == 0  # Nothing is due before the schedule says so.
        clock.advance(timedelta(milliseconds=999))
        assert await round_() == 0
        clock.advance(timedelta(milliseconds=1))
        assert await round_() == 2

        final = await list_deliveries(
            notifier_pool, merchant_id=merchant_id, event_id=event.event_id
        )
        assert [(d.status, d.attempt_count, d.next_attempt_at) for d in final] == [
            ("failed", 2, None),
            ("failed", 2, None),
        ]
        assert all([a.attempt_number for a in d.attempts] == [1, 2] for d in final)
        clock.advance(timedelta(days=1))
        assert await round_() == 0
    assert len(receiver.on("/stuck")) == 2
    assert receiver.on("/ok") == []


async def test_a_risk_alert_is_delivered_signed_to_the_ops_webhook(
    settings: ServiceSettings, publisher: KafkaBroker
) -> None:
    receiver = Receiver()
    secret = f"whsec_ops_{uuid.uuid4().hex}"
    async with serving(receiver) as receiver_url:
        notifier_settings = NotifierSettings(
            **settings.model_dump(),
            webhook_allowed_hosts=["127.0.0.1"],
            webhook_retry_schedule_ms=[0, 100],
            delivery_poll_interval_ms=50,
            ops_webhook_url=f"{receiver_url}/ok",
            ops_webhook_secret=secret,
        )
        app = create_app(notifier_settings)
        async with app.router.lifespan_context(app):
            alert = new_event(
                RiskAlertRaised,
                RiskAlertRaisedPayload(
                    kind=RiskAlertKind.PAYER_FAILURE_BURST,
                    subject="payer-1",
                    value=5.0,
                    threshold=5.0,
                    message="payer payer-1: 5 failed payments within 600 s",
                ),
                aggregate_id="risk_alerts:payer_failure_burst:payer-1",
                aggregate_version=1,
                merchant_id="platform",
                producer="risk",
                occurred_at=datetime.now(UTC),
                correlation_id="risk_alerts",
                causation_id=None,
            )
            topic = topic_name(Topic.RISK_DECISIONS, notifier_settings.kafka_topic_prefix)
            await publisher.publish(encode(alert), topic=topic, key=b"alerts")
            await wait_until(lambda: len(receiver.on("/ok")) == 1, "the alert delivered")
    (received,) = receiver.on("/ok")
    verify(received.headers["payrail-signature"], received.body, [secret], now=int(time.time()))
    document = json.loads(received.body)
    assert document["type"] == "risk.alert"
    assert document["data"]["object"]["kind"] == "payer_failure_burst"
    assert document["data"]["object"]["subject"] == "payer-1"


async def test_a_dead_letter_is_delivered_signed_to_the_ops_webhook(
    settings: ServiceSettings, publisher: KafkaBroker
) -> None:
    receiver = Receiver()
    secret = f"whsec_ops_{uuid.uuid4().hex}"
    async with serving(receiver) as receiver_url:
        notifier_settings = NotifierSettings(
            **settings.model_dump(),
            webhook_allowed_hosts=["127.0.0.1"],
            webhook_retry_schedule_ms=[0, 100],
            delivery_poll_interval_ms=50,
            ops_webhook_url=f"{receiver_url}/ok",
            ops_webhook_secret=secret,
        )
        app = create_app(notifier_settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://notifier"
            ) as api,
        ):
            parked = DeadLetter(
                consumer="ledger:payments.events",
                source_topic=topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix),
                source_partition=1,
                source_offset=7,
                message_key=b"pay_1",
                body=b"{not json",
                reason="undecodable: body is not JSON",
            )
            dead_letter_id = uuid.uuid4()
            event = dead_letter_recorded(
                parked, dead_letter_id, service="ledger", occurred_at=datetime.now(UTC)
            )
            topic = topic_name(Topic.OPERATIONS_EVENTS, notifier_settings.kafka_topic_prefix)
            await publisher.publish(encode(event), topic=topic, key=event.aggregate_id.encode())
            await wait_until(lambda: len(receiver.on("/ok")) == 1, "the dead letter delivered")
            (delivery,) = await deliveries_of(api, "platform", event.event_id)
    assert (delivery["endpoint_id"], delivery["event_type"]) == ("we_ops", "dead_letter.recorded")
    (received,) = receiver.on("/ok")
    verify(received.headers["payrail-signature"], received.body, [secret], now=int(time.time()))
    document = json.loads(received.body)
    assert (document["id"], document["type"]) == (str(event.event_id), "dead_letter.recorded")
    assert document["data"]["object"] == {
        "id": str(dead_letter_id),
        "object": "dead_letter",
        "service": "ledger",
        "consumer": "ledger:payments.events",
        "source_topic": parked.source_topic,
        "source_partition": 1,
        "source_offset": 7,
        "message_id": None,
        "message_type": None,
        "reason": "undecodable: body is not JSON",
    }


async def test_a_rotated_secret_signs_next_to_the_new_one_until_its_overlap_ends(
    settings: ServiceSettings, publisher: KafkaBroker
) -> None:
    notifier_settings = NotifierSettings(
        **settings.model_dump(),
        webhook_allowed_hosts=["127.0.0.1"],
        delivery_poll_interval_ms=50,
    )
    app = create_app(notifier_settings)
    receiver = Receiver()
    merchant_id = f"mch_{uuid.uuid4().hex[:8]}"
    topic = topic_name(Topic.PAYMENTS_EVENTS, notifier_settings.kafka_topic_prefix)
    async with (
        serving(receiver) as receiver_url,
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://notifier"
        ) as api,
    ):
        endpoint = await create_endpoint(api, merchant_id, f"{receiver_url}/ok", ["*"])
        path = f"/internal/v1/webhook_endpoints/{endpoint['id']}"
        rotated = await api.post(
            f"{path}/rotate_secret", json={"merchant_id": merchant_id, "overlap_seconds": 3600}
        )
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != endpoint["secret"]

        async def delivered(count: int) -> ReceivedRequest:
            await publisher.publish(encode(payment_succeeded(merchant_id)), topic=topic)
            await wait_until(lambda: len(receiver.on("/ok")) == count, f"delivery {count}")
            return receiver.on("/ok")[-1]

        during = await delivered(1)
        for secret in (endpoint["secret"], new_secret):  # either secret verifies
            verify(during.headers["payrail-signature"], during.body, [secret], now=int(time.time()))

        retired = await api.post(
            f"{path}/rotate_secret", json={"merchant_id": merchant_id, "overlap_seconds": 0}
        )
        newest = retired.json()["secret"]
        after = await delivered(2)
        verify(after.headers["payrail-signature"], after.body, [newest], now=int(time.time()))
        assert after.headers["payrail-signature"].count("v1=") == 1

        disabled = await api.patch(path, json={"merchant_id": merchant_id, "enabled": False})
        assert (disabled.status_code, disabled.json()["enabled"]) == (200, False)
        others = await api.patch(path, json={"merchant_id": "mch_other", "enabled": True})
        assert (others.status_code, others.json()["code"]) == (404, "webhook_endpoint_not_found")
        deleted = await api.delete(path, params={"merchant_id": merchant_id})
        assert deleted.status_code == 204
        listed = await api.get(
            "/internal/v1/webhook_endpoints", params={"merchant_id": merchant_id}
        )
        assert listed.json()["data"] == []
        again = await api.delete(path, params={"merchant_id": merchant_id})
        assert again.status_code == 404
