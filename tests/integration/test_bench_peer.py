"""The event store comparison writes every event with both systems, in every
configuration and scenario, and leaves no scratch database behind: a benchmark that
silently appended nothing would report a rate all the same."""

from __future__ import annotations

import asyncpg
import pytest

from bench.event_store_peer import SCENARIOS, SYSTEMS, measure_event_store_peer

pytestmark = pytest.mark.integration

EVENT_COUNT = 40
WRITER_COUNT = 4


async def test_both_systems_write_every_event_and_the_scratch_database_is_dropped(
    postgres_admin: str,
) -> None:
    results = await measure_event_store_peer(
        postgres_admin, EVENT_COUNT, writer_count=WRITER_COUNT, repeat_count=1, timeout_s=60.0
    )

    assert (results["events_per_scenario"], results["writers"]) == (EVENT_COUNT, WRITER_COUNT)
    assert set(results["scenarios"]) == {scenario.name for scenario in SCENARIOS}
    for scenario in results["scenarios"].values():
        # Counted in each store's table after the run, not by the writers.
        assert scenario["events_written_runs"] == {system: [EVENT_COUNT] for system in SYSTEMS}
        for system in SYSTEMS:
            assert scenario[f"{system}_events_per_s"] > 0
            # An event of realistic size: a PaymentCreated body is a few hundred bytes.
            assert scenario["event_bytes_mean"][system] > 300
    admin = await asyncpg.connect(postgres_admin, timeout=10)
    try:
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", results["scratch_database"]
        )
    finally:
        await admin.close()
    assert left == 0
