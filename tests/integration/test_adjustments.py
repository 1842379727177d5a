"""Manual adjustments in the ledger against a real broker and PostgreSQL: posted once per
reference, refused when the reference names other figures, reversed once by the opposite
entry (the journal is never edited), and replayed by a rebuild to the same balances."""

from __future__ import annotations

import uuid

import httpx
import pytest

from schemas import Topic
from services.common.clock import FixedClock
from services.common.settings import ServiceSettings
from services.ledger import rebuild
from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from tests.integration.test_ledger_service import NOW, wait_until
from tests.integration.test_payouts import Ledger
from tests.integration.test_settlement import onboarded

pytestmark = pytest.mark.integration


async def test_adjustments_post_once_and_reverse_once(settings: ServiceSettings) -> None:
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    app = create_app(LedgerSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
            ledger = Ledger(settings, app.state.context.pool, client)
            request = {
                "merchant_id": merchant,
                "reference": "goodwill-1",
                "currency": "CNY",
                "amount_minor": 1_500,
                "reason": "goodwill for a late delivery",
            }
            unknown = await client.post("/internal/v1/adjustments", json=request)
            assert (unknown.status_code, unknown.json()["code"]) == (404, "merchant_not_found")

            await ledger.publish(Topic.MERCHANTS_EVENTS, [onboarded(merchant)])

            async def merchant_known() -> bool:
                return bool(await ledger.pool.fetchval("SELECT count(*) FROM merchant_terms"))

            await wait_until(merchant_known, "the merchant's terms")
            posted = await client.post("/internal/v1/adjustments", json=request)
            assert posted.status_code == 201, posted.text
            again = await client.post("/internal/v1/adjustments", json=request)
            assert (again.status_code, again.json()) == (200, posted.json())
            assert await ledger.balance(merchant, "available") == 1_500
            conflict = await client.post(
                "/internal/v1/adjustments", json={**request, "amount_minor": 1_600}
            )
            assert (conflict.status_code, conflict.json()["code"]) == (
                409,
                "adjustment_reference_reused",
            )

            adjustment_id = posted.json()["adjustment_id"]
            path = f"/internal/v1/adjustments/{adjustment_id}/reverse"
            reversed_now = await client.post(path, json={"reason": "posted to the wrong merchant"})
            assert reversed_now.status_code == 201
            reversal = reversed_now.json()
            assert (reversal["amount_minor"], reversal["reverses"]) == (-1_500, adjustment_id)
            twice = await client.post(path, json={"reason": "again"})
            assert (twice.status_code, twice.json()["adjustment_id"]) == (
                200,
                reversal["adjustment_id"],
            )
            of_reversal = await client.post(
                f"/internal/v1/adjustments/{reversal['adjustment_id']}/reverse",
                json={"reason": "no"},
            )
            assert (of_reversal.status_code, of_reversal.json()["code"]) == (
                409,
                "adjustment_is_reversal",
            )
            missing = await client.post(
                "/internal/v1/adjustments/adj_nope/reverse", json={"reason": "x"}
            )
            assert missing.json()["code"] == "adjustment_not_found"
            assert await ledger.balance(merchant, "available") == 0
            # Two entries, both kept: the correction is an entry, not an edit.
            assert await ledger.entries() == 2

        async def rebuilt_equal() -> bool:
            _log, differences = await rebuild.rebuild_and_compare(
                settings.kafka_bootstrap_servers, settings.database_url, settings.kafka_topic_prefix
            )
            return differences == []

        await wait_until(rebuilt_equal, "a rebuild equal to the live balances")
