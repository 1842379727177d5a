"""A merchant's balance transactions, read from the ledger against a real PostgreSQL: every
posting on the merchant's accounts newest first, each exactly once across pages of two
(entries posted mid-walk included), amounts as the merchant sees them, nothing of another
merchant's, cursors checked; and the sequence migration numbering existing journal rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from schemas import Event
from schemas.common import FeePlan
from services.common.clock import FixedClock
from services.common.db import apply_migrations, load_migrations
from services.common.settings import ServiceSettings
from services.ledger.app import create_app
from services.ledger.domain import entry_id_for
from services.ledger.handlers import post_event
from services.ledger.settings import LedgerSettings
from services.ledger.settlement_run import record_merchant_terms
from services.ledger.transactions import list_balance_transactions
from tests.integration.test_ledger_rebuild import refund_succeeded
from tests.integration.test_ledger_service import NOW, SCHEMA, insert_entry, payment_succeeded
from tests.integration.test_settlement import onboarded

pytestmark = pytest.mark.integration

PLAN = FeePlan(basis_points=250, fixed_minor=30)
PATH = "/internal/v1/balance_transactions"
PAGES_MAX = 20


@pytest.fixture
async def ledger(
    settings: ServiceSettings,
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Connection]]:
    """The ledger app (migrated, consuming nothing of ours) and a connection to its schema."""
    app = create_app(LedgerSettings(**settings.model_dump()), clock=FixedClock(NOW))
    async with app.router.lifespan_context(app):
        connection: asyncpg.Connection = await asyncpg.connect(
            settings.database_url, timeout=10, server_settings={"search_path": f"{SCHEMA},public"}
        )
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://ledger", timeout=10
            ) as client:
                yield client, connection
        finally:
            await connection.close()


async def post(connection: asyncpg.Connection, *events: Event) -> None:
    for event in events:
        async with connection.transaction():
            assert await post_event(connection, event, clock=FixedClock(NOW)) is not None


async def walk(
    client: httpx.AsyncClient,
    merchant_id: str,
    *,
    limit: int,
    between_pages: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Every transaction of `merchant_id`, page by page; checks `has_more` on each page."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(PAGES_MAX):
        params: dict[str, str | int] = {"merchant_id": merchant_id, "limit": limit}
        if cursor is not None:
            params["starting_after"] = cursor
        answer = await client.get(PATH, params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["data"]) <= limit
        seen += page["data"]
        if not page["has_more"]:
            return seen
        assert len(page["data"]) == limit
        cursor = page["data"][-1]["id"]
        if between_pages is not None:
            await between_pages()
            between_pages = None
    pytest.fail(f"more than {PAGES_MAX} pages")


async def test_pages_of_two_list_every_posting_of_the_merchant_once_newest_first(
    ledger: tuple[httpx.AsyncClient, asyncpg.Connection],
) -> None:
    client, connection = ledger
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    other = f"mch_{uuid.uuid4().hex[:10]}"
    first = payment_succeeded(merchant_id=merchant, amount_minor=12_340, fee_plan=PLAN)
    theirs = payment_succeeded(merchant_id=other, amount_minor=5_000, fee_plan=PLAN)
    second = payment_succeeded(merchant_id=merchant, amount_minor=1_000, fee_plan=PLAN)
    refund = refund_succeeded(merchant, first.aggregate_id, 2_000)
    await record_merchant_terms(connection, onboarded(merchant))
    await post(connection, first, theirs, second, refund)
    # Fees: 30 + round_half_even(308.5) = 338 (a tie, to even) and 30 + 25 = 55.
    net = (12_340 - 338) + (1_000 - 55) - 2_000
    settled = await client.post(
        "/internal/v1/settlements/run", json={"as_of": str(NOW.date() + timedelta(days=1))}
    )
    (batch,) = settled.json()
    assert batch["net_minor"] == net
    settlement_event_id = await connection.fetchval(
        "SELECT message_id::text FROM event_store WHERE stream_id = $1", batch["batch_id"]
    )

    def expected(event_id: object, line: int, kind: str, bucket: str, amount: int) -> object:
        entry_id = entry_id_for(str(event_id))
        return (f"btx_{entry_id}_{line}", entry_id, kind, str(event_id), bucket, amount)

    newest_first = [
        expected(settlement_event_id, 2, "settlement", "available", net),
        expected(settlement_event_id, 1, "settlement", "pending", -net),
        expected(refund.event_id, 1, "refund_succeeded", "pending", -2_000),
        expected(second.event_id, 2, "payment_succeeded", "pending", 1_000 - 55),
        expected(first.event_id, 2, "payment_succeeded", "pending", 12_340 - 338),
    ]
    late = payment_succeeded(merchant_id=merchant, amount_minor=400, fee_plan=PLAN)

    async def post_late() -> None:
        await post(connection, late)

    # An entry posted while the merchant pages through shifts nothing: no repeat, no gap.
    walked = await walk(client, merchant, limit=2, between_pages=post_late)
    assert [
        (t["id"], t["entry_id"], t["kind"], t["source_event_id"], t["bucket"], t["amount_minor"])
        for t in walked
    ] == newest_first
    assert {(t["currency"], datetime.fromisoformat(t["occurred_at"])) for t in walked} == {
        ("CNY", NOW)
    }
    again = await walk(client, merchant, limit=2)
    assert [t["source_event_id"] for t in again[:2]] == [str(late.event_id), settlement_event_id]
    assert again[0]["amount_minor"] == 400 - 40  # fee 30 + round_half_even(10) = 40

    theirs_listed = await walk(client, other, limit=2)
    assert [(t["source_event_id"], t["amount_minor"]) for t in theirs_listed] == [
        (str(theirs.event_id), 5_000 - 155)  # fee 30 + 125
    ]
    assert not {t["id"] for t in theirs_listed} & {t["id"] for t in again}
    nobody = await client.get(PATH, params={"merchant_id": f"mch_{uuid.uuid4().hex[:10]}"})
    assert nobody.json() == {"data": [], "has_more": False}


async def test_a_cursor_that_is_not_the_merchants_is_refused(
    ledger: tuple[httpx.AsyncClient, asyncpg.Connection],
) -> None:
    client, connection = ledger
    merchant = f"mch_{uuid.uuid4().hex[:10]}"
    other = f"mch_{uuid.uuid4().hex[:10]}"
    theirs = payment_succeeded(merchant_id=other, amount_minor=5_000, fee_plan=PLAN)
    await post(connection, theirs)
    their_entry = entry_id_for(theirs.event_id)
    for owner, cursor in (
        (merchant, f"btx_{their_entry}_2"),  # another merchant's transaction
        (merchant, "btx_je_nothing_1"),
        (merchant, "not-a-cursor"),
        (merchant, "btx_je_\x00_1"),  # text PostgreSQL would refuse
        (other, f"btx_{their_entry}_1"),  # its own entry, but the channel's posting
        (other, f"btx_{their_entry}_99"),
        (other, f"btx_{their_entry}_x"),
        (other, f"btx_{their_entry}_0"),
    ):
        answer = await client.get(PATH, params={"merchant_id": owner, "starting_after": cursor})
        assert (answer.status_code, answer.json()["code"]) == (422, "unknown_cursor"), cursor
    mine = await client.get(
        PATH, params={"merchant_id": other, "starting_after": f"btx_{their_entry}_2"}
    )
    assert mine.json() == {"data": [], "has_more": False}
    bad_merchant = await client.get(PATH, params={"merchant_id": "mch:1"})
    assert (bad_merchant.status_code, bad_merchant.json()["code"]) == (422, "invalid_merchant_id")


async def test_the_sequence_migration_numbers_existing_entries_in_insertion_order(
    database_url: str,
) -> None:
    migrations = load_migrations("services.common.migrations", "services.ledger.migrations")
    await apply_migrations(database_url, SCHEMA, [m for m in migrations if m.version < 102])
    connection: asyncpg.Connection = await asyncpg.connect(
        database_url, timeout=10, server_settings={"search_path": f"{SCHEMA},public"}
    )
    try:
        before = []
        for amount in (100, 200, 300):
            async with connection.transaction():
                before.append(
                    await insert_entry(
                        connection,
                        [
                            ("platform:x", "CNY", amount),
                            ("merchant:mch_test:pending", "CNY", -amount),
                        ],
                    )
                )
        # Numbering rewrites the table, not an UPDATE: the append-only triggers stay quiet.
        assert 102 in await apply_migrations(database_url, SCHEMA, migrations)
        async with connection.transaction():
            after = await insert_entry(
                connection, [("platform:x", "CNY", 400), ("merchant:mch_test:pending", "CNY", -400)]
            )
            # The raw insert names no parties (post_entry does); the migration named the
            # entries before it.
            await connection.execute(
                "INSERT INTO entry_parties (merchant_id, seq, entry_id)"
                " SELECT 'mch_test', seq, entry_id FROM journal_entries WHERE entry_id = $1",
                after,
            )
        numbered = await connection.fetch("SELECT entry_id, seq FROM journal_entries ORDER BY seq")
        assert [row["entry_id"] for row in numbered] == [*before, after]
        assert all(row["seq"] is not None for row in numbered)
        page, has_more = await list_balance_transactions(connection, "mch_test", limit=3)
        assert ([t.entry_id for t in page], has_more) == ([after, *before[:0:-1]], True)
        assert [t.amount_minor for t in page] == [400, 300, 200]
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await connection.execute("UPDATE journal_entries SET kind = 'edited'")
        with pytest.raises(asyncpg.GeneratedAlwaysError):
            await connection.execute(
                "INSERT INTO journal_entries (entry_id, source_event_id, kind, merchant_id,"
                " occurred_at, seq) VALUES ('je_x', $1, 'test', 'mch_test', now(), 1)",
                uuid.uuid4(),
            )
    finally:
        await connection.close()
