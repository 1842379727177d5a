"""The delivery worker against a real PostgreSQL and real HTTP receivers, with time under
the test's control: an endpoint failing for the configured period is disabled once (its
event reaches the merchant's other endpoints and the ops webhook, its deliveries wait),
a success ends a run of failures, the ops endpoint is never disabled, deleting an endpoint
fails what it had pending, replays and resends queue new deliveries, and the queue gauges
measure the backlog."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from schemas import Topic, decode, new_event
from schemas.common import Channel, FeePlan
from schemas.payments import (
    PaymentCanceled,
    PaymentCanceledPayload,
    PaymentSucceeded,
    PaymentSucceededPayload,
)
from schemas.risk import RiskAlertKind, RiskAlertRaised, RiskAlertRaisedPayload
from schemas.webhooks import WebhookEndpointDisabled
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.notifier import delivery_log
from services.notifier.delivery import (
    CLAIM_LOCK_CLASS_SQL,
    ClaimedDelivery,
    DeliveryDispatcher,
    claim_due,
    deliver_due,
    lease_ms,
    refresh_queue_gauges,
)
from services.notifier.delivery_log import (
    EndpointDisabled,
    NoSubscribedEndpoint,
    ReplayTooLarge,
    list_deliveries,
    replay_events,
    resend_event,
)
from services.notifier.domain import OPS_ENDPOINT_ID
from services.notifier.egress import webhook_client
from services.notifier.handlers import (
    CreatedWebhookEndpoint,
    create_endpoint,
    delete_endpoint,
    enqueue_deliveries,
    ensure_ops_endpoint,
    update_endpoint,
)
from services.notifier.settings import NotifierSettings
from tests.support.polling import wait_until
from tests.support.webhook_receiver import Route, WebhookReceiver

pytestmark = pytest.mark.integration

DISABLE_AFTER = timedelta(seconds=60)
RETRY = timedelta(seconds=20)
ALLOWED = ["127.0.0.1"]


@pytest.fixture
def pool(notifier_pool: asyncpg.Pool) -> asyncpg.Pool:
    return notifier_pool


@pytest.fixture
def receiver() -> Any:
    with WebhookReceiver() as serving:
        yield serving


@pytest.fixture
async def http_client(notifier_settings: NotifierSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The client the notifier sends webhooks with (its allow-list lets 127.0.0.1 through)."""
    async with webhook_client(notifier_settings) as client:
        yield client


@pytest.fixture
def notifier_settings(settings: ServiceSettings) -> NotifierSettings:
    return NotifierSettings(
        **settings.model_dump(),
        webhook_retry_schedule_ms=[0] + [int(RETRY.total_seconds() * 1000)] * 10,
        webhook_disable_after_ms=int(DISABLE_AFTER.total_seconds() * 1000),
        webhook_timeout_ms=2_000,
        webhook_allowed_hosts=ALLOWED,
    )


def payment_event(
    merchant_id: str, occurred_at: datetime, *, canceled: bool = False
) -> PaymentSucceeded | PaymentCanceled:
    payment_id = f"pay_{uuid.uuid4().hex}"
    terms: dict[str, Any] = {
        "order_id": f"order-{uuid.uuid4().hex[:8]}",
        "amount_minor": 2_500,
        "currency": "CNY",
        "channel": Channel.ALIPAY,
        "fee_plan": FeePlan(basis_points=60, fixed_minor=0),
    }
    common: dict[str, Any] = {
        "aggregate_id": payment_id,
        "aggregate_version": 3,
        "merchant_id": merchant_id,
        "producer": "payment_center",
        "occurred_at": occurred_at,
        "correlation_id": f"corr-{payment_id}",
        "causation_id": None,
    }
    if canceled:
        return new_event(
            PaymentCanceled, PaymentCanceledPayload(**terms, reason="customer_left"), **common
        )
    payload = PaymentSucceededPayload(
        **terms, channel_trade_id=f"trade-{uuid.uuid4().hex[:8]}", paid_at=occurred_at
    )
    return new_event(PaymentSucceeded, payload, **common)


async def consume(pool: asyncpg.Pool, event: Any, clock: FixedClock) -> None:
    """What the consumer does with one event, in its own transaction."""
    async with pool.acquire() as connection, connection.transaction():
        await enqueue_deliveries(connection, event, clock=clock)


async def register(
    pool: asyncpg.Pool,
    receiver: WebhookReceiver,
    merchant_id: str,
    route: Route,
    clock: FixedClock,
    events: list[str] | None = None,
) -> CreatedWebhookEndpoint:
    path = f"/{uuid.uuid4().hex[:10]}"
    created = await create_endpoint(
        pool,
        merchant_id=merchant_id,
        url=receiver.url(path),
        events=events or ["*"],
        clock=clock,
        allowed_hosts=ALLOWED,
    )
    route.secrets = [created.secret]
    receiver.route(path, route)
    return created


def path_of(endpoint: CreatedWebhookEndpoint) -> str:
    return "/" + endpoint.endpoint.url.rsplit("/", 1)[1]


async def test_an_endpoint_failing_for_the_period_is_disabled_once_and_its_deliveries_wait(
    pool: asyncpg.Pool,
    receiver: WebhookReceiver,
    notifier_settings: NotifierSettings,
    http_client: httpx.AsyncClient,
) -> None:
    clock = FixedClock(datetime.now(UTC))
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    await ensure_ops_endpoint(
        pool, url=receiver.url("/ops"), secret="whsec_ops_test", clock=clock, allowed_hosts=ALLOWED
    )
    receiver.route("/ops", Route(secrets=["whsec_ops_test"]))
    down_route = Route(always_fail=True)
    down = await register(pool, receiver, merchant, down_route, clock)
    healthy = await register(pool, receiver, merchant, Route(), clock)

    async def round_() -> int:
        return await deliver_due(pool, http_client, notifier_settings, clock)

    await consume(pool, payment_event(merchant, clock.now()), clock)
    assert await round_() == 2  # one each; the healthy endpoint is done
    for _ in range(2):
        clock.advance(DISABLE_AFTER / 2)
        disabled_events = await pool.fetch(
            "SELECT body::text AS body FROM event_store WHERE message_type = $1",
            "WebhookEndpointDisabled",
        )
        assert disabled_events == []  # not yet: failing for less than the period
        assert await round_() == 1

    endpoint = await pool.fetchrow(
        "SELECT * FROM webhook_endpoints WHERE endpoint_id = $1", down.endpoint.endpoint_id
    )
    assert endpoint is not None
    assert endpoint["enabled"] is False
    assert endpoint["disabled_at"] == clock.now()
    assert endpoint["disabled_reason"].startswith("every delivery attempt failed for 0.02 hours")
    (recorded,) = await pool.fetch(
        "SELECT topic, body::text AS body FROM event_store WHERE message_type = $1",
        "WebhookEndpointDisabled",
    )
    event = decode(Topic(recorded["topic"]), recorded["body"].encode())
    assert isinstance(event, WebhookEndpointDisabled)
    assert (event.merchant_id, event.payload.endpoint_id) == (merchant, down.endpoint.endpoint_id)
    assert event.payload.failing_since == clock.now() - DISABLE_AFTER

    # The event reaches the merchant's other endpoint and operations, not the disabled one.
    await consume(pool, event, clock)
    assert await round_() == 2
    assert [r.event_id for r in receiver.received("/ops")] == [str(event.event_id)]
    assert receiver.received(path_of(healthy))[-1].event_id == str(event.event_id)
    assert all(r.verified for r in receiver.received("/ops"))

    # Nothing more goes to the disabled endpoint; its delivery waits, pending.
    attempts_before = len(receiver.received(path_of(down)))
    clock.advance(RETRY * 3)
    await consume(pool, payment_event(merchant, clock.now()), clock)
    assert await round_() == 1  # the healthy endpoint only
    assert len(receiver.received(path_of(down))) == attempts_before
    waiting = await list_deliveries(
        pool, merchant_id=merchant, endpoint_id=down.endpoint.endpoint_id
    )
    assert [(d.status, d.attempt_count) for d in waiting] == [("pending", 3)]

    # Enabled again, with the receiver fixed: the delivery goes out, the run is over.
    down_route.always_fail = False
    enabled = await update_endpoint(
        pool,
        endpoint_id=down.endpoint.endpoint_id,
        merchant_id=merchant,
        url=None,
        events=None,
        enabled=True,
        clock=clock,
    )
    assert (enabled.enabled, enabled.disabled_at, enabled.disabled_reason) == (True, None, None)
    assert await round_() == 1
    delivered = await list_deliveries(
        pool, merchant_id=merchant, endpoint_id=down.endpoint.endpoint_id
    )
    assert [(d.status, d.attempt_count) for d in delivered] == [("succeeded", 4)]
    assert all(r.verified for r in receiver.received(path_of(down)))


def risk_alert(at: datetime) -> RiskAlertRaised:
    payload = RiskAlertRaisedPayload(
        kind=RiskAlertKind.PAYER_FAILURE_BURST,
        subject="payer-1",
        value=5.0,
        threshold=5.0,
        message="payer payer-1: 5 failed payments within 600 s",
    )
    return new_event(
        RiskAlertRaised,
        payload,
        aggregate_id=f"risk_alerts:{uuid.uuid4().hex}",
        aggregate_version=1,
        merchant_id="platform",
        producer="risk",
        occurred_at=at,
        correlation_id="alerts",
        causation_id=None,
    )


async def test_a_success_ends_a_run_of_failures_and_the_ops_endpoint_is_never_disabled(
    pool: asyncpg.Pool,
    receiver: WebhookReceiver,
    notifier_settings: NotifierSettings,
    http_client: httpx.AsyncClient,
) -> None:
    clock = FixedClock(datetime.now(UTC))
    started = clock.now()
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    route = Route(always_fail=True)
    flaky = await register(pool, receiver, merchant, route, clock)

    async def round_() -> int:
        return await deliver_due(pool, http_client, notifier_settings, clock)

    async def endpoint_state() -> tuple[bool, datetime | None]:
        row = await pool.fetchrow(
            "SELECT enabled, failing_since FROM webhook_endpoints WHERE endpoint_id = $1",
            flaky.endpoint.endpoint_id,
        )
        assert row is not None
        return row["enabled"], row["failing_since"]

    await consume(pool, payment_event(merchant, clock.now()), clock)
    assert await round_() == 1
    assert await endpoint_state() == (True, started)
    clock.advance(DISABLE_AFTER - timedelta(seconds=10))
    route.always_fail = False  # the retry and a new event both get through
    await consume(pool, payment_event(merchant, clock.now()), clock)
    assert await round_() == 2
    assert await endpoint_state() == (True, None)
    # Failing again, past the period counted from the first failure but not from the
    # new run's start: the endpoint stays enabled.
    route.always_fail = True
    clock.advance(timedelta(seconds=20))
    await consume(pool, payment_event(merchant, clock.now()), clock)
    assert await round_() == 1
    assert await endpoint_state() == (True, clock.now())

    # The ops endpoint fails for far longer than the period and stays enabled.
    await ensure_ops_endpoint(
        pool, url=receiver.url("/ops-down"), secret="whsec_ops", clock=clock, allowed_hosts=ALLOWED
    )
    receiver.route("/ops-down", Route(always_fail=True, secrets=["whsec_ops"]))
    for _ in range(3):
        await consume(pool, risk_alert(clock.now()), clock)
        await round_()
        clock.advance(DISABLE_AFTER)
    ops = await pool.fetchrow(
        "SELECT enabled, failing_since FROM webhook_endpoints WHERE endpoint_id = $1",
        OPS_ENDPOINT_ID,
    )
    assert ops is not None
    assert ops["enabled"] is True
    assert ops["failing_since"] is not None
    assert len(receiver.received("/ops-down")) >= 3
    assert all(r.verified for r in receiver.received("/ops-down"))


async def test_a_claim_takes_each_endpoints_share_of_due_work_and_passes_over_the_rest(
    pool: asyncpg.Pool, receiver: WebhookReceiver, notifier_settings: NotifierSettings
) -> None:
    share = notifier_settings.webhook_endpoint_concurrency_max
    clock = FixedClock(datetime.now(UTC) - timedelta(minutes=10))
    merchants = {name: f"m_{name}_{uuid.uuid4().hex[:8]}" for name in ("backlog", "one")}
    merchants |= {name: f"m_{name}_{uuid.uuid4().hex[:8]}" for name in ("later", "off")}
    endpoints = {
        name: (await register(pool, receiver, merchant, Route(), clock)).endpoint.endpoint_id
        for name, merchant in merchants.items()
    }
    # The backlog, due first, goes to the endpoint whose id sorts after the other's, so a
    # claim that took endpoints in id order rather than by due time would show.
    if endpoints["backlog"] < endpoints["one"]:
        for roles in (merchants, endpoints):
            roles["backlog"], roles["one"] = roles["one"], roles["backlog"]
    for index in range(40):  # endpoints of other merchants with nothing to deliver
        await register(pool, receiver, f"m_idle_{index}_{uuid.uuid4().hex[:6]}", Route(), clock)

    # One endpoint's backlog is due first, one second later the others'.
    for _ in range(share * 3):
        await consume(pool, payment_event(merchants["backlog"], clock.now()), clock)
        clock.advance(timedelta(milliseconds=10))
    clock.advance(timedelta(seconds=1))
    for name in ("one", "off"):
        await consume(pool, payment_event(merchants[name], clock.now()), clock)
    async with pool.acquire() as connection, connection.transaction():
        await enqueue_deliveries(  # due in an hour: not yet
            connection,
            payment_event(merchants["later"], clock.now()),
            clock=clock,
            first_attempt_delay_ms=3_600_000,
        )
    await update_endpoint(
        pool,
        endpoint_id=endpoints["off"],
        merchant_id=merchants["off"],
        url=None,
        events=None,
        enabled=False,
        clock=clock,
        allowed_hosts=ALLOWED,
    )
    backlog_oldest_first = [
        d.delivery_id
        for d in reversed(await list_deliveries(pool, merchant_id=merchants["backlog"]))
    ]
    now = datetime.now(UTC)

    async def claim(limit: int, at: datetime = now) -> list[ClaimedDelivery]:
        return await claim_due(pool, at, notifier_settings, limit=limit)

    # Oldest due first across endpoints: the backlog's first `share` fill a claim of that many.
    first = await claim(share)
    assert sorted(d.delivery_id for d in first) == sorted(backlog_oldest_first[:share])
    # Those leases fill the backlog's slots, for any worker: the next claim takes only the
    # other due endpoint's delivery, passing over the disabled endpoint and the one due later.
    assert Counter(d.endpoint_id for d in await claim(100)) == {endpoints["one"]: 1}
    assert await claim(100) == []
    # When the leases end (their workers died) the slots free, the oldest due go first.
    after_leases = now + timedelta(milliseconds=lease_ms(notifier_settings) + 1)
    fourth = await claim(100, after_leases)
    assert Counter(d.endpoint_id for d in fourth) == {
        endpoints["backlog"]: share,
        endpoints["one"]: 1,
    }
    assert {d.delivery_id for d in fourth if d.endpoint_id == endpoints["backlog"]} == set(
        backlog_oldest_first[share : 2 * share]
    )


async def test_a_claim_passes_over_an_endpoint_another_claim_holds_and_only_that(
    pool: asyncpg.Pool, receiver: WebhookReceiver, notifier_settings: NotifierSettings
) -> None:
    share = notifier_settings.webhook_endpoint_concurrency_max
    clock = FixedClock(datetime.now(UTC))
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    endpoint_id = (await register(pool, receiver, merchant, Route(), clock)).endpoint.endpoint_id
    for _ in range(share * 2):
        await consume(pool, payment_event(merchant, clock.now()), clock)

    # Another worker's claim holds the endpoint's claim lock while it counts and takes its
    # free slots. Were this claim to take slots too, both would fill the same free slots.
    async with pool.acquire() as other, other.transaction():
        await other.execute(
            f"SELECT pg_advisory_xact_lock({CLAIM_LOCK_CLASS_SQL}, hashtext($1))", endpoint_id
        )
        passed_over = await asyncio.wait_for(
            claim_due(pool, clock.now(), notifier_settings, limit=100), timeout=5
        )
    assert passed_over == []  # and it did not wait for the other claim
    assert len(await claim_due(pool, clock.now(), notifier_settings, limit=100)) == share

    # The consumer queueing deliveries and an attempt being recorded lock the endpoint's
    # row; a claim neither waits for that nor passes the endpoint over.
    after_leases = clock.now() + timedelta(milliseconds=lease_ms(notifier_settings) + 1)
    async with pool.acquire() as other, other.transaction():
        await other.execute(
            "SELECT 1 FROM webhook_endpoints WHERE endpoint_id = $1 FOR UPDATE", endpoint_id
        )
        claimed = await asyncio.wait_for(
            claim_due(pool, after_leases, notifier_settings, limit=100), timeout=5
        )
    assert len(claimed) == share


async def test_two_workers_keep_an_endpoint_to_its_share_of_attempts_in_flight(
    pool: asyncpg.Pool,
    receiver: WebhookReceiver,
    notifier_settings: NotifierSettings,
    http_client: httpx.AsyncClient,
) -> None:
    share = notifier_settings.webhook_endpoint_concurrency_max
    clock = FixedClock(datetime.now(UTC))
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    release = threading.Event()
    endpoint = await register(pool, receiver, merchant, Route(hold=release), clock)
    for _ in range(share * 2 + 1):
        await consume(pool, payment_event(merchant, clock.now()), clock)
    # Two dispatchers on one database: two notifier processes, as far as it can tell.
    first = DeliveryDispatcher(pool, http_client, notifier_settings, clock)
    second = DeliveryDispatcher(pool, http_client, notifier_settings, clock)
    try:
        assert await first.fill() == share
        assert await second.fill() == 0  # the endpoint's slots are all taken
        await wait_until(
            lambda: receiver.arrived(path_of(endpoint)) == share,
            timeout_s=10,
            what="the first share of attempts to arrive",
        )
    finally:
        release.set()
    await first.drain()
    assert await second.fill() == share  # recorded attempts free their slots
    await second.drain()
    assert await first.fill() == 1
    await first.drain()

    assert receiver.in_flight_max(path_of(endpoint)) == share
    deliveries = await list_deliveries(pool, merchant_id=merchant)
    assert [d.status for d in deliveries] == ["succeeded"] * (share * 2 + 1)
    assert all(r.verified for r in receiver.received(path_of(endpoint)))


async def test_a_graceful_stop_lets_the_attempts_in_flight_finish_and_be_recorded(
    pool: asyncpg.Pool,
    receiver: WebhookReceiver,
    notifier_settings: NotifierSettings,
    http_client: httpx.AsyncClient,
) -> None:
    clock = FixedClock(datetime.now(UTC))
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    release = threading.Event()
    endpoint = await register(pool, receiver, merchant, Route(hold=release), clock)
    await consume(pool, payment_event(merchant, clock.now()), clock)
    worker = asyncio.create_task(
        DeliveryDispatcher(pool, http_client, notifier_settings, clock).run()
    )
    await wait_until(
        lambda: receiver.arrived(path_of(endpoint)) == 1,
        timeout_s=10,
        what="the attempt to reach the receiver",
    )
    worker.cancel()  # the stop comes while the receiver is still answering
    asyncio.get_running_loop().call_later(0.2, release.set)
    await asyncio.gather(worker, return_exceptions=True)

    (delivery,) = await list_deliveries(pool, merchant_id=merchant)
    assert (delivery.status, [a.status_code for a in delivery.attempts]) == ("succeeded", [200])
    leased = await pool.fetchval(
        "SELECT leased_until FROM webhook_deliveries WHERE delivery_id = $1",
        delivery.delivery_id,
    )
    assert leased is None


async def test_deleting_an_endpoint_fails_its_pending_deliveries(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    clock = FixedClock(datetime.now(UTC))
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    endpoint = await register(pool, receiver, merchant, Route(), clock)
    await consume(pool, payment_event(merchant, clock.now()), clock)
    await delete_endpoint(
        pool, endpoint_id=endpoint.endpoint.endpoint_id, merchant_id=merchant, clock=clock
    )
    (delivery,) = await list_deliveries(pool, merchant_id=merchant)
    assert (delivery.status, delivery.next_attempt_at, delivery.attempts) == ("failed", None, ())


async def test_replays_and_resends_queue_new_deliveries_of_what_the_endpoint_subscribes_to(
    pool: asyncpg.Pool,
    receiver: WebhookReceiver,
    notifier_settings: NotifierSettings,
    http_client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = datetime.now(UTC) - timedelta(hours=5)
    clock = FixedClock(start)
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    events = [
        payment_event(merchant, start),
        payment_event(merchant, start + timedelta(hours=1), canceled=True),
        payment_event(merchant, start + timedelta(hours=2)),
        payment_event(merchant, start + timedelta(hours=4)),
    ]
    for event in events:  # before any endpoint exists: kept, delivered to no one
        await consume(pool, event, clock)
    clock = FixedClock(datetime.now(UTC))
    endpoint = await register(pool, receiver, merchant, Route(), clock, ["payment.succeeded"])
    endpoint_id = endpoint.endpoint.endpoint_id

    queued = await replay_events(
        pool,
        merchant_id=merchant,
        endpoint_id=endpoint_id,
        start=start,
        end=start + timedelta(hours=3),
        clock=clock,
    )
    assert queued == 2  # the canceled payment is not subscribed, the last is out of range
    assert await deliver_due(pool, http_client, notifier_settings, clock) == 2
    # Both are due at once and sent in parallel: they may arrive in either order.
    assert sorted(r.event_id for r in receiver.received(path_of(endpoint))) == sorted(
        [str(events[0].event_id), str(events[2].event_id)]
    )

    assert (
        await resend_event(
            pool, merchant_id=merchant, event_id=events[3].event_id, endpoint_id=None, clock=clock
        )
        == 1
    )
    with pytest.raises(NoSubscribedEndpoint):
        await resend_event(
            pool, merchant_id=merchant, event_id=events[1].event_id, endpoint_id=None, clock=clock
        )
    # Asked for by name, an endpoint gets the event whatever it subscribes to.
    assert (
        await resend_event(
            pool,
            merchant_id=merchant,
            event_id=events[1].event_id,
            endpoint_id=endpoint_id,
            clock=clock,
        )
        == 1
    )
    assert await deliver_due(pool, http_client, notifier_settings, clock) == 2
    origins = sorted(d.origin for d in await list_deliveries(pool, merchant_id=merchant))
    assert origins == ["replay", "replay", "resend", "resend"]
    assert all(r.verified for r in receiver.received(path_of(endpoint)))

    monkeypatch.setattr(delivery_log, "REPLAY_EVENT_COUNT_MAX", 1)
    with pytest.raises(ReplayTooLarge):
        await replay_events(
            pool,
            merchant_id=merchant,
            endpoint_id=endpoint_id,
            start=start,
            end=start + timedelta(hours=3),
            clock=clock,
        )
    await update_endpoint(
        pool,
        endpoint_id=endpoint_id,
        merchant_id=merchant,
        url=None,
        events=None,
        enabled=False,
        clock=clock,
    )
    with pytest.raises(EndpointDisabled):
        await replay_events(
            pool,
            merchant_id=merchant,
            endpoint_id=endpoint_id,
            start=start,
            end=start + timedelta(hours=1),
            clock=clock,
        )


async def test_the_queue_gauges_count_pending_deliveries_and_age_the_oldest(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    clock = FixedClock(datetime.now(UTC))
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    live = await register(pool, receiver, merchant, Route(), clock)
    paused = await register(pool, receiver, merchant, Route(), clock)
    for _ in range(3):
        await consume(pool, payment_event(merchant, clock.now()), clock)
        clock.advance(timedelta(seconds=10))
    await update_endpoint(
        pool,
        endpoint_id=paused.endpoint.endpoint_id,
        merchant_id=merchant,
        url=None,
        events=None,
        enabled=False,
        clock=clock,
    )
    await refresh_queue_gauges(pool, clock)

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert sample("payrail_webhook_pending_deliveries", endpoint_state="enabled") == 3
    assert sample("payrail_webhook_pending_deliveries", endpoint_state="disabled") == 3
    assert sample("payrail_webhook_oldest_pending_delivery_age_seconds") == 30.0
    assert live.endpoint.enabled
