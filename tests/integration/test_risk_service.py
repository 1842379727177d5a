"""The risk service against a real broker and PostgreSQL: a redelivered or re-published
payment is decided and counted once (by the daily limits and by velocity), its counters
survive a restart, and a burst of failures raises one alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from schemas import Topic, new_event, topic_name
from schemas.common import Channel, Failure, FeePlan
from schemas.payments import (
    Payer,
    PaymentCreated,
    PaymentFailed,
    PaymentFailedPayload,
    PaymentRequest,
    PaymentTerms,
)
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.risk.app import create_app
from services.risk.settings import RiskSettings
from tests.integration.test_ledger_service import wait_until

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def payment_created(merchant_id: str, payer_id: str, minute: int) -> PaymentCreated:
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_event(
        PaymentCreated,
        PaymentRequest(
            order_id=f"order-{uuid.uuid4().hex[:8]}",
            amount_minor=1_000,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
            payer=Payer(id=payer_id),
        ),
        aggregate_id=payment_id,
        aggregate_version=1,
        merchant_id=merchant_id,
        producer="payment_center",
        occurred_at=NOW + timedelta(minutes=minute),
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


async def publish(settings: ServiceSettings, *events: PaymentCreated | PaymentFailed) -> None:
    producer = build_broker(settings, client_id="risk-test-producer")
    await producer.connect()
    try:
        for event in events:
            await producer.publish(
                event.model_dump_json().encode(),
                topic=topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix),
                key=event.aggregate_id.encode(),
            )
    finally:
        await producer.stop()


async def outcomes(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch("SELECT payment_id, outcome FROM payment_observations")
    return {row["payment_id"]: row["outcome"] for row in rows}


async def test_a_redelivered_payment_counts_once_and_counters_survive_a_restart(
    settings: ServiceSettings,
) -> None:
    merchant, payer = f"mch_{uuid.uuid4().hex[:10]}", f"payer-{uuid.uuid4().hex[:8]}"
    risk_settings = RiskSettings(**settings.model_dump())
    first = payment_created(merchant, payer, minute=0)
    # The same payment published again under another event id (a producer retry that got
    # past the outbox): it must not count as a second payment of the payer.
    republished = first.model_copy(update={"event_id": uuid.uuid4(), "message_id": uuid.uuid4()})
    app = create_app(risk_settings, clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        pool: asyncpg.Pool = app.state.context.pool
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://risk") as client:
            rules = (await client.get(f"/internal/v1/merchants/{merchant}/risk_rules")).json()
            answer = await client.put(
                f"/internal/v1/merchants/{merchant}/risk_rules",
                json={
                    **rules,
                    "payer_daily_count_limit": 2,
                    "velocity": [{"key": "payer", "window_seconds": 3600, "max_count": 2}],
                },
            )
            assert answer.status_code == 200, answer.text
        await publish(settings, first, first, republished)

        async def decided_once() -> bool:
            decisions = await pool.fetchval(
                "SELECT count(*) FROM event_store WHERE stream_id = $1", first.aggregate_id
            )
            return decisions == 1 and await outcomes(pool) == {first.aggregate_id: "approve"}

        await wait_until(decided_once, "one decision for the payment")

    # A new process on the same database: the payer's count for the day is still 1.
    restarted = create_app(risk_settings, clock=FixedClock(NOW))
    async with restarted.router.lifespan_context(restarted):
        pool = restarted.state.context.pool
        second, third = (payment_created(merchant, payer, minute=m) for m in (1, 2))
        for count, payment in enumerate((second, third), start=2):
            # One at a time: payments of different ids may sit on different partitions.
            await publish(settings, payment)

            async def counted(count: int = count) -> bool:
                return len(await outcomes(pool)) == count

            await wait_until(counted, f"{count} payments decided")
        decided = await outcomes(pool)
        assert (decided[second.aggregate_id], decided[third.aggregate_id]) == ("approve", "deny")
        fired = await pool.fetchval(
            "SELECT body->'payload'->'fired_rules'->0->>'rule_id' FROM event_store"
            " WHERE stream_id = $1",
            third.aggregate_id,
        )
        assert fired == "limit.payer_daily_count"
        velocity = await pool.fetchval(
            "SELECT body->'payload'->'fired_rules'->1->>'rule_id' FROM event_store"
            " WHERE stream_id = $1",
            third.aggregate_id,
        )
        assert velocity == "velocity.payer.3600s"


def payment_failed(created: PaymentCreated, code: str) -> PaymentFailed:
    terms = PaymentTerms.model_validate(
        created.payload.model_dump(include=set(PaymentTerms.model_fields))
    )
    return new_event(
        PaymentFailed,
        PaymentFailedPayload(**terms.model_dump(), failure=Failure(code=code, message="no")),
        aggregate_id=created.aggregate_id,
        aggregate_version=3,
        merchant_id=created.merchant_id,
        producer="payment_center",
        occurred_at=created.occurred_at + timedelta(seconds=5),
        correlation_id=created.correlation_id,
        causation_id=None,
    )


async def test_a_burst_of_failures_from_one_payer_raises_one_alert(
    settings: ServiceSettings,
) -> None:
    merchant, payer = f"mch_{uuid.uuid4().hex[:10]}", f"payer-{uuid.uuid4().hex[:8]}"
    created = [payment_created(merchant, payer, minute=minute) for minute in range(6)]
    failed = [payment_failed(event, "channel_card_declined") for event in created]
    app = create_app(RiskSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        pool: asyncpg.Pool = app.state.context.pool
        # Each payment's events share its key, so a payment's failure follows its creation;
        # the failures go after all creations so the burst is judged in order of time.
        await publish(settings, *created)

        async def all_decided() -> bool:
            return len(await outcomes(pool)) == len(created)

        await wait_until(all_decided, "every payment decided")
        for event in failed:
            await publish(settings, event)

        async def watched() -> bool:
            count = await pool.fetchval("SELECT count(*) FROM payment_outcomes")
            return bool(count == len(failed))

        await wait_until(watched, "every failure watched")
        alerts = await pool.fetch(
            "SELECT body->'payload' AS payload FROM event_store"
            " WHERE message_type = 'RiskAlertRaised'"
        )
    # Five failures within ten minutes alert; the sixth is within the cooldown.
    assert len(alerts) == 1
    alert = alerts[0]["payload"]
    # Five or six: the failures are keyed by payment, so batches of several partitions
    # may judge them out of order, and the last to judge sees all six.
    assert (alert["kind"], alert["subject"]) == ("payer_failure_burst", payer)
    assert alert["value"] in (5.0, 6.0)
