"""The ledger projection benchmark measures real work: the events it replays through the
ledger's live consumer path end up as the balances the ledger's rules call for, its own
check catches a projection that does not, and it leaves no scratch schema behind."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.ledger_projection import (
    ProjectionMismatch,
    check_projection,
    measure_ledger_projection,
    migrate_ledger_schema,
    produce_events,
    project_through_ledger,
    synthetic_events,
)
from schemas.refunds import RefundSucceeded
from services.common.settings import ServiceSettings
from services.ledger.domain import ENTRY_RULES

pytestmark = pytest.mark.integration

SCHEMA = "ledger"
EVENT_COUNT = 200


@pytest.fixture
async def connection(settings: ServiceSettings) -> AsyncIterator[asyncpg.Connection]:
    opened: asyncpg.Connection = await asyncpg.connect(settings.database_url, timeout=10)
    yield opened
    await opened.close()


async def test_replayed_balances_equal_the_sum_of_the_events_postings(
    settings: ServiceSettings, connection: asyncpg.Connection
) -> None:
    events = synthetic_events(EVENT_COUNT, seed=7)
    assert any(isinstance(event, RefundSucceeded) for event in events)
    assert len({event.merchant_id for event in events}) > 10
    expected: defaultdict[tuple[str, str], int] = defaultdict(int)
    for event in events:
        for posting in ENTRY_RULES[type(event)][1](event):
            expected[(posting.account_id, posting.currency)] += posting.amount_minor

    await produce_events(settings, events)
    await migrate_ledger_schema(settings.database_url, SCHEMA)
    timing = await project_through_ledger(settings, SCHEMA, len(events), timeout_s=60)

    assert timing.in_consumer_s > 0 and timing.elapsed_s > 0
    # Batches, not records: the projection took the events a partition batch at a time.
    assert 1 <= timing.batch_count < EVENT_COUNT
    rows = await connection.fetch(
        f"SELECT account_id, currency, balance_minor FROM {SCHEMA}.account_balances"
    )
    projected = {(row["account_id"], row["currency"]): row["balance_minor"] for row in rows}
    assert projected == dict(expected)
    # One inbox row per event: the records went through the inbox.
    assert await connection.fetchval(f"SELECT count(*) FROM {SCHEMA}.inbox") == EVENT_COUNT
    counts = await check_projection(connection, SCHEMA, events)
    assert counts["journal_entries"] == EVENT_COUNT

    some_account, _ = next(iter(expected))
    await connection.execute(
        f"UPDATE {SCHEMA}.account_balances SET balance_minor = balance_minor + 1"
        " WHERE account_id = $1",
        some_account,
    )
    with pytest.raises(ProjectionMismatch, match="balances differ"):
        await check_projection(connection, SCHEMA, events)


async def test_the_measurement_reports_its_ratio_and_drops_its_schemas(
    settings: ServiceSettings, connection: asyncpg.Connection
) -> None:
    result = await measure_ledger_projection(settings, 150, timeout_s=60)

    assert (result["events"], result["journal_entries"]) == (150, 150)
    assert result["copy_rows"] == result["journal_entries"] + result["postings"]
    ratio = result["ledger_projection_events_per_s"] / result["copy_events_per_s"]
    assert result["projection_over_copy_ratio"] == pytest.approx(ratio, rel=0.01)
    assert result["projection_x_slower_than_copy"] == pytest.approx(1 / ratio, rel=0.01)
    left = await connection.fetchval(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'bench\\_%'"
    )
    assert left == 0
