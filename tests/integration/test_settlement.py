"""Settlement in the ledger against a real broker and PostgreSQL: a T+1 merchant's
captures minus refunds move from pending to available on day T+1, once, with a CSV
statement whose figures are computed here independently."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import asyncpg
import httpx
import pytest

from schemas import Topic, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.merchants import MerchantOnboarded, MerchantProfile, SettlementTerms
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from tests.integration.test_ledger_rebuild import refund_succeeded
from tests.integration.test_ledger_service import NOW, payment_succeeded, wait_until

pytestmark = pytest.mark.integration

PLAN = FeePlan(basis_points=250, fixed_minor=30)


T_PLUS_ONE = SettlementTerms(delay_days=1, cutoff_time="00:00", time_zone="UTC")


def onboarded(merchant_id: str, terms: SettlementTerms = T_PLUS_ONE) -> MerchantOnboarded:
    """An Alipay merchant on PLAN with `terms`, as the gateway announces it."""
    profile = MerchantProfile(
        name="Shop",
        channels=(Channel.ALIPAY,),
        fee_plans={Channel.ALIPAY: PLAN},
        settlement_terms=terms,
    )
    return new_event(
        MerchantOnboarded,
        profile,
        aggregate_id=merchant_id,
        aggregate_version=1,
        merchant_id=merchant_id,
        producer="gateway",
        occurred_at=NOW,
        correlation_id=f"corr-{merchant_id}",
        causation_id=None,
    )


async def test_a_t_plus_one_merchant_is_settled_once_on_the_next_day(
    settings: ServiceSettings,
) -> None:
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    first = payment_succeeded(merchant_id=merchant, amount_minor=12_345, fee_plan=PLAN)
    second = payment_succeeded(merchant_id=merchant, amount_minor=1_000, fee_plan=PLAN)
    refund = refund_succeeded(merchant, first.aggregate_id, 2_000)
    # Fees: 30 + round_half_even(308.625) = 339 and 30 + 25 = 55.
    expected_net = (12_345 - 339) + (1_000 - 55) - 2_000
    app = create_app(LedgerSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        pool: asyncpg.Pool = app.state.context.pool
        producer = build_broker(settings, client_id="settlement-test-producer")
        await producer.connect()
        try:
            await producer.publish(
                onboarded(merchant).model_dump_json().encode(),
                topic=topic_name(Topic.MERCHANTS_EVENTS, settings.kafka_topic_prefix),
                key=merchant.encode(),
            )
            for event in (first, second, refund):
                await producer.publish(
                    event.model_dump_json().encode(),
                    topic=topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix),
                    key=b"one",
                )
        finally:
            await producer.stop()

        async def ready() -> bool:
            entries = await pool.fetchval("SELECT count(*) FROM journal_entries")
            terms = await pool.fetchval("SELECT count(*) FROM merchant_terms")
            return bool(entries == 3 and terms == 1)

        await wait_until(ready, "three entries posted and the merchant's terms known")

        async def balance(bucket: str) -> int:
            value = await pool.fetchval(
                "SELECT balance_minor FROM account_balances WHERE account_id = $1",
                f"merchant:{merchant}:{bucket}",
            )
            return -int(value or 0)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
            today = NOW.date()
            same_day = await client.post("/internal/v1/settlements/run", json={"as_of": str(today)})
            assert same_day.json() == []
            next_day = str(today + timedelta(days=1))
            settled = await client.post("/internal/v1/settlements/run", json={"as_of": next_day})
            (batch,) = settled.json()
            assert (batch["net_minor"], batch["line_count"]) == (expected_net, 3)
            assert await balance("pending") == 0
            assert await balance("available") == expected_net
            again = await client.post("/internal/v1/settlements/run", json={"as_of": next_day})
            assert again.json() == []
            assert await balance("available") == expected_net
            statement = await client.get(
                f"/internal/v1/settlements/{batch['batch_id']}/statement.csv"
            )
        rows = [line.split(",") for line in statement.text.strip().splitlines()]
        assert rows[0][-1] == "amount_minor"
        assert sorted(int(row[-1]) for row in rows[1:-1]) == sorted([12_006, 945, -2_000])
        assert rows[-1][3:] == ["net", "", "CNY", str(expected_net)]
        assert date.fromisoformat(rows[-1][1]) == NOW.date() + timedelta(days=1)
