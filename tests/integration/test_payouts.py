"""Payouts in the ledger against a real broker and PostgreSQL: settled funds are paid out
once per day above the merchant's minimum, a failed payout returns the money, a refund
after payout makes available negative and later settlements recover it, and a rebuild
from the log (payments.events and ledger.events) equals the live balances."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import Topic, new_event, topic_name
from schemas.common import Failure
from schemas.envelope import Event
from schemas.merchants import SettlementTerms
from schemas.payouts import (
    BankPayoutFailed,
    BankPayoutFailedPayload,
    BankPayoutPaid,
    BankPayoutPaidPayload,
)
from services.common.broker import build_broker
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.ledger import rebuild
from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from tests.integration.test_ledger_rebuild import refund_succeeded
from tests.integration.test_ledger_service import NOW, payment_succeeded, wait_until
from tests.integration.test_settlement import PLAN, onboarded

pytestmark = pytest.mark.integration

MINIMUM = 500
TERMS = SettlementTerms(delay_days=1, payout_minimum_minor=MINIMUM)


def bank_result(merchant_id: str, payout_id: str, *, paid: bool) -> Event:
    common: dict[str, Any] = {
        "aggregate_id": payout_id,
        "aggregate_version": 1,
        "merchant_id": merchant_id,
        "producer": "gateway",
        "occurred_at": NOW,
        "correlation_id": payout_id,
        "causation_id": None,
    }
    if paid:
        return new_event(
            BankPayoutPaid,
            BankPayoutPaidPayload(payout_id=payout_id, bank_reference="bnk_1"),
            **common,
        )
    return new_event(
        BankPayoutFailed,
        BankPayoutFailedPayload(
            payout_id=payout_id, failure=Failure(code="bank_account_closed", message="closed")
        ),
        **common,
    )


def fee(amount: int) -> int:
    """30 + 2.5 %, half-even, computed here independently of the ledger."""
    proportional, remainder = divmod(amount * 250, 10_000)
    if remainder * 2 > 10_000 or (remainder * 2 == 10_000 and proportional % 2 == 1):
        proportional += 1
    return 30 + proportional


class Ledger:
    def __init__(self, settings: ServiceSettings, pool: asyncpg.Pool, client: httpx.AsyncClient):
        self.settings = settings
        self.pool = pool
        self.client = client

    async def publish(self, topic: Topic, events: Sequence[Event]) -> None:
        producer = build_broker(self.settings, client_id="payouts-test-producer")
        await producer.connect()
        try:
            for event in events:
                await producer.publish(
                    event.model_dump_json().encode(),
                    topic=topic_name(topic, self.settings.kafka_topic_prefix),
                    key=b"one",
                )
        finally:
            await producer.stop()

    async def balance(self, merchant: str, bucket: str) -> int:
        value = await self.pool.fetchval(
            "SELECT balance_minor FROM account_balances WHERE account_id = $1",
            f"merchant:{merchant}:{bucket}",
        )
        return -int(value or 0)

    async def run(self, what: str, day_offset: int) -> list[dict[str, Any]]:
        day = NOW.date() + timedelta(days=day_offset)
        answer = await self.client.post(f"/internal/v1/{what}/run", json={"as_of": str(day)})
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()
        return result

    async def entries(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM journal_entries"))

    async def wait_for_entries(self, count: int) -> None:
        async def posted() -> bool:
            return await self.entries() == count

        await wait_until(posted, f"{count} journal entries")


async def test_payouts_pay_once_return_failures_and_recover_negative_balances(
    settings: ServiceSettings,
) -> None:
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    first = payment_succeeded(merchant_id=merchant, amount_minor=12_345, fee_plan=PLAN)
    second = payment_succeeded(merchant_id=merchant, amount_minor=1_000, fee_plan=PLAN)
    settled_net = 12_345 - fee(12_345) + 1_000 - fee(1_000)
    app = create_app(LedgerSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
            ledger = Ledger(settings, app.state.context.pool, client)
            await ledger.publish(Topic.MERCHANTS_EVENTS, [onboarded(merchant, TERMS)])
            await ledger.publish(Topic.PAYMENTS_EVENTS, [first, second])
            await ledger.wait_for_entries(2)

            async def terms_known() -> bool:
                return bool(await ledger.pool.fetchval("SELECT count(*) FROM merchant_terms"))

            await wait_until(terms_known, "the merchant's terms")

            # Nothing is available before settlement: no payout.
            assert await ledger.run("payouts", 0) == []
            (batch,) = await ledger.run("settlements", 1)
            assert batch["net_minor"] == settled_net
            (payout,) = await ledger.run("payouts", 1)
            assert (payout["amount_minor"], payout["currency"]) == (settled_net, "CNY")
            assert await ledger.balance(merchant, "available") == 0
            assert await ledger.balance(merchant, "payouts_in_transit") == settled_net
            assert await ledger.run("payouts", 1) == []  # the same day again pays nothing

            # The bank fails it (and says so twice): the money is back in available, once.
            failed = bank_result(merchant, payout["payout_id"], paid=False)
            repeated = bank_result(merchant, payout["payout_id"], paid=False)
            await ledger.publish(Topic.CHANNEL_RESULTS, [failed, repeated])
            await ledger.wait_for_entries(5)
            assert await ledger.balance(merchant, "available") == settled_net
            assert await ledger.balance(merchant, "payouts_in_transit") == 0
            status = await ledger.pool.fetchval(
                "SELECT status FROM payouts WHERE payout_id = $1", payout["payout_id"]
            )
            assert status == "failed"

            # The next day pays it again, and this time the bank pays.
            (retry,) = await ledger.run("payouts", 2)
            assert (
                retry["amount_minor"] == settled_net and retry["payout_id"] != payout["payout_id"]
            )
            await ledger.publish(
                Topic.CHANNEL_RESULTS, [bank_result(merchant, retry["payout_id"], paid=True)]
            )
            await ledger.wait_for_entries(7)
            assert await ledger.balance(merchant, "payouts_in_transit") == 0
            assert await ledger.balance(merchant, "available") == 0
            # A late "failed" for the paid payout changes nothing.
            await ledger.publish(
                Topic.CHANNEL_RESULTS, [bank_result(merchant, retry["payout_id"], paid=False)]
            )

            # A refund after the payout: settlement takes it from available, which goes
            # negative and pays nothing until later settlements recover it.
            await ledger.publish(
                Topic.PAYMENTS_EVENTS, [refund_succeeded(merchant, first.aggregate_id, 5_000)]
            )
            await ledger.wait_for_entries(8)
            (negative,) = await ledger.run("settlements", 3)
            assert negative["net_minor"] == -5_000
            assert await ledger.balance(merchant, "available") == -5_000
            assert await ledger.run("payouts", 3) == []

            third = payment_succeeded(merchant_id=merchant, amount_minor=5_200, fee_plan=PLAN)
            await ledger.publish(Topic.PAYMENTS_EVENTS, [third])
            await ledger.wait_for_entries(10)
            await ledger.run("settlements", 4)
            below_minimum = -5_000 + 5_200 - fee(5_200)
            assert 0 < below_minimum < MINIMUM
            assert await ledger.balance(merchant, "available") == below_minimum
            assert await ledger.run("payouts", 4) == []  # recovered, but below the minimum

            fourth = payment_succeeded(merchant_id=merchant, amount_minor=1_000, fee_plan=PLAN)
            await ledger.publish(Topic.PAYMENTS_EVENTS, [fourth])
            await ledger.wait_for_entries(12)
            await ledger.run("settlements", 5)
            (last,) = await ledger.run("payouts", 5)
            assert last["amount_minor"] == below_minimum + 1_000 - fee(1_000)
            assert await ledger.balance(merchant, "available") == 0
            assert await ledger.entries() == 14
            assert await ledger.balance(merchant, "pending") == 0

            # Every entry balances in the database too: all accounts sum to zero.
            total = await ledger.pool.fetchval("SELECT sum(balance_minor) FROM account_balances")
            assert total == 0

        async def rebuilt_equal() -> bool:
            # The ledger's own events reach the log through its outbox: retry until they
            # are all there, then nothing may differ.
            _log, differences = await rebuild.rebuild_and_compare(
                settings.kafka_bootstrap_servers, settings.database_url, settings.kafka_topic_prefix
            )
            return differences == []

        await wait_until(rebuilt_equal, "a rebuild from the log equal to the live balances")
