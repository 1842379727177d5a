"""`payrail ledger rebuild` against a real broker and PostgreSQL: the balances replayed
from the event log equal the live ledger's, and a tampered balance is reported."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from schemas import Topic, new_event, topic_name
from schemas.common import Channel, FeePlan
from schemas.refunds import RefundInitiator, RefundSucceeded, RefundSucceededPayload
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.ledger import rebuild
from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from tests.integration.test_ledger_service import NOW, payment_succeeded, wait_until

pytestmark = pytest.mark.integration


def refund_succeeded(merchant_id: str, payment_id: str, amount_minor: int) -> RefundSucceeded:
    return new_event(
        RefundSucceeded,
        RefundSucceededPayload(
            refund_id=f"re_{uuid.uuid4().hex}",
            amount_minor=amount_minor,
            currency="CNY",
            channel=Channel.ALIPAY,
            reason="damaged",
            initiator=RefundInitiator.MERCHANT,
            order_id="order-1",
            channel_refund_id="R1",
            succeeded_at=NOW,
        ),
        aggregate_id=payment_id,
        aggregate_version=6,
        merchant_id=merchant_id,
        producer="payment_center",
        occurred_at=NOW,
        correlation_id=f"corr-{payment_id}",
        causation_id=None,
    )


async def test_a_rebuild_from_the_log_equals_the_live_balances_and_finds_tampering(
    settings: ServiceSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    plan = FeePlan(basis_points=60, fixed_minor=0)
    first = payment_succeeded(merchant_id=merchant, amount_minor=10_000, fee_plan=plan)
    second = payment_succeeded(merchant_id=merchant, amount_minor=2_500, fee_plan=plan)
    refund = refund_succeeded(merchant, first.aggregate_id, 4_000)
    topic = topic_name(Topic.PAYMENTS_EVENTS, settings.kafka_topic_prefix)
    app = create_app(LedgerSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        pool: asyncpg.Pool = app.state.context.pool
        producer = build_broker(settings, client_id="rebuild-test-producer")
        await producer.connect()
        try:
            # One key, one partition: the refund is consumed after everything before it.
            for body in (first, second, first, b"not json", refund):
                raw = body if isinstance(body, bytes) else body.model_dump_json().encode()
                await producer.publish(raw, topic=topic, key=b"one")
        finally:
            await producer.stop()

        async def refund_posted() -> bool:
            kinds = await pool.fetch("SELECT kind FROM journal_entries")
            return "refund_succeeded" in {row["kind"] for row in kinds}

        await wait_until(refund_posted, "the refund posted")

        log, differences = await rebuild.rebuild_and_compare(
            settings.kafka_bootstrap_servers, settings.database_url, settings.kafka_topic_prefix
        )
        payment_events = [event for event in log.events if event.topic is Topic.PAYMENTS_EVENTS]
        assert (len(payment_events), log.undecodable_count) == (4, 1)
        assert differences == []
        # 10_000 - 60 fee + 2_500 - 15 fee - 4_000 refund, credit-normal.
        rebuilt = rebuild.project_balances(log.events)
        assert rebuilt[(f"merchant:{merchant}:pending", "CNY")] == -(9_940 + 2_485 - 4_000)

        await pool.execute(
            "UPDATE account_balances SET balance_minor = balance_minor - 1 WHERE account_id = $1",
            f"merchant:{merchant}:pending",
        )
        exit_code = await asyncio.to_thread(
            rebuild.run,
            settings.kafka_bootstrap_servers,
            settings.database_url,
            settings.kafka_topic_prefix,
        )
    assert exit_code == 1
    printed = capsys.readouterr().out
    assert f"merchant:{merchant}:pending CNY: live -8426, rebuilt -8425" in printed
