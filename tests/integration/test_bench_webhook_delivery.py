"""The webhook delivery benchmark delivers every webhook it queued, in every run, and
leaves no scratch schema behind."""

from __future__ import annotations

import asyncpg
import pytest

from bench.webhook_delivery import measure_webhook_delivery
from services.common.settings import ServiceSettings

pytestmark = pytest.mark.integration


async def test_every_run_delivers_every_webhook_and_drops_its_schema(
    settings: ServiceSettings,
) -> None:
    results = await measure_webhook_delivery(settings.database_url, 40, idle_endpoints=50)

    assert (results["deliveries"], results["idle_endpoints"]) == (40, 50)
    for run in ("healthy", "with_hanging_endpoint", "with_idle_endpoints"):
        assert results[run]["elapsed_s"] > 0
        assert results[run]["deliveries_per_s"] == pytest.approx(
            40 / results[run]["elapsed_s"], rel=0.01
        )
    connection = await asyncpg.connect(settings.database_url)
    try:
        left = await connection.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bench_notifier_%'"
        )
    finally:
        await connection.close()
    assert left == 0
