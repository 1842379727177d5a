"""The risk service against a real broker and PostgreSQL: a redelivered or re-published
payment is decided and counted once (by the daily limits and by velocity), its counters
survive a restart, a payer is counted within its merchant (the block list alone is
platform-wide), amounts are summed per currency, and a burst of failures raises one
alert."""

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


def payment_created(
    merchant_id: str, payer_id: str, minute: int, currency: str = "CNY"
) -> PaymentCreated:
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_event(
        PaymentCreated,
        PaymentRequest(
            order_id=f"order-{uuid.uuid4().hex[:8]}",
            amount_minor=1_000,
            currency=currency,
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


async def decide_in_turn(
    settings: ServiceSettings, pool: asyncpg.Pool, *payments: PaymentCreated
) -> dict[str, str]:
    """Publish `payments` one at a time (they may sit on different partitions), each once
    the one before is decided; the outcome of each."""
    for payment in payments:
        await publish(settings, payment)

        async def decided(payment_id: str = payment.aggregate_id) -> bool:
            return payment_id in await outcomes(pool)

        await wait_until(decided, f"payment {payment.aggregate_id} decided")
    decided_all = await outcomes(pool)
    return {payment.aggregate_id: decided_all[payment.aggregate_id] for payment in payments}


async def first_rule(pool: asyncpg.Pool, payment_id: str) -> str | None:
    rule: str | None = await pool.fetchval(
        "SELECT body->'payload'->'fired_rules'->0->>'rule_id' FROM event_store"
        " WHERE stream_id = $1",
        payment_id,
    )
    return rule


async def test_a_payer_is_counted_within_its_merchant_and_blocked_platform_wide(
    settings: ServiceSettings,
) -> None:
    shop_a, shop_b = (f"mch_{uuid.uuid4().hex[:10]}" for _ in range(2))
    # Both merchants call their own customer by the same id.
    payer = f"user-{uuid.uuid4().hex[:8]}"
    app = create_app(RiskSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        pool: asyncpg.Pool = app.state.context.pool
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://risk") as client:
            for shop in (shop_a, shop_b):
                rules = (await client.get(f"/internal/v1/merchants/{shop}/risk_rules")).json()
                answer = await client.put(
                    f"/internal/v1/merchants/{shop}/risk_rules",
                    json={
                        **rules,
                        "payer_daily_count_limit": 2,
                        "velocity": [{"key": "payer", "window_seconds": 3600, "max_count": 2}],
                    },
                )
                assert answer.status_code == 200, answer.text
            a1, a2, b1, a3 = (
                payment_created(shop_a, payer, minute=0),
                payment_created(shop_a, payer, minute=1),
                payment_created(shop_b, payer, minute=2),
                payment_created(shop_a, payer, minute=3),
            )
            decided = await decide_in_turn(settings, pool, a1, a2, b1, a3)
            # Merchant A's customer used up A's limits; B's customer of the same id is
            # another person, with limits of its own.
            assert [decided[p.aggregate_id] for p in (a1, a2, b1, a3)] == [
                "approve",
                "approve",
                "approve",
                "deny",
            ]
            assert await first_rule(pool, a3.aggregate_id) == "limit.payer_daily_count"
            # The block list is platform-wide: blocking the id denies it at every merchant.
            blocked = await client.post(
                "/internal/v1/blocklist", json={"key": "payer", "value": payer}
            )
            assert blocked.status_code == 201, blocked.text
            b2 = payment_created(shop_b, payer, minute=4)
            assert await decide_in_turn(settings, pool, b2) == {b2.aggregate_id: "deny"}
            assert await first_rule(pool, b2.aggregate_id) == "blocklist.payer"


async def test_amounts_are_summed_per_currency_and_counts_across_currencies(
    settings: ServiceSettings,
) -> None:
    shop, payer = f"mch_{uuid.uuid4().hex[:10]}", f"payer-{uuid.uuid4().hex[:8]}"
    app = create_app(RiskSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        pool: asyncpg.Pool = app.state.context.pool
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://risk") as client:
            rules = (await client.get(f"/internal/v1/merchants/{shop}/risk_rules")).json()
            # 15.00 CNY, 1,500 JPY and 15.00 USD a payer a day, and two payments in all.
            limits = {"payer_daily_amount_limit_minor": 1_500}
            answer = await client.put(
                f"/internal/v1/merchants/{shop}/risk_rules",
                json={
                    **rules,
                    "amount_limits": {"CNY": limits, "JPY": limits, "USD": limits},
                    "payer_daily_count_limit": 2,
                    "velocity": [],
                },
            )
            assert answer.status_code == 200, answer.text
        cny_1, jpy_1, cny_2, usd_1, bhd_1 = (
            payment_created(shop, payer, minute=0, currency="CNY"),
            payment_created(shop, payer, minute=1, currency="JPY"),
            payment_created(shop, payer, minute=2, currency="CNY"),
            payment_created(shop, payer, minute=3, currency="USD"),
            payment_created(shop, payer, minute=4, currency="BHD"),
        )
        # 1,000 minor units fit in each currency's own sum; a second 1,000 in CNY does not.
        decided = await decide_in_turn(settings, pool, cny_1, jpy_1, cny_2)
        assert list(decided.values()) == ["approve", "approve", "deny"]
        assert await first_rule(pool, cny_2.aggregate_id) == "limit.payer_daily_amount"
        # The first USD payment fits in USD's amount limit, but it is the payer's third
        # payment of the day (denied ones do not count), in any currency.
        assert await decide_in_turn(settings, pool, usd_1) == {usd_1.aggregate_id: "deny"}
        assert await first_rule(pool, usd_1.aggregate_id) == "limit.payer_daily_count"
        # A currency the rules set no limits for is denied.
        assert await decide_in_turn(settings, pool, bhd_1) == {bhd_1.aggregate_id: "deny"}
        assert await first_rule(pool, bhd_1.aggregate_id) == "limit.currency_not_configured"


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
    # A payer is the merchant's own customer: the subject names both.
    assert (alert["kind"], alert["subject"]) == ("payer_failure_burst", f"{merchant}:{payer}")
    assert alert["value"] in (5.0, 6.0)
