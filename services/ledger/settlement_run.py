"""Running settlement for a day: every merchant's due, unsettled entries become one batch
per currency, posted as one journal entry from pending to available.

A run holds a transaction-level advisory lock, so two runs never settle at once; each
entry is settled at most once (unique `settlement_lines.entry_id`), and a merchant,
currency and day has at most one batch, so running a day twice changes nothing. Entries
that become due for a day already settled wait for the next day's run.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date

import asyncpg
import structlog

from schemas.ledger import (
    SettlementBatchSummary,
    SettlementCreated,
    SettlementCreatedPayload,
    SettlementLine,
)
from schemas.merchants import MerchantOnboarded, MerchantUpdated, SettlementTerms
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision
from services.ledger.domain import (
    PAYMENT_SUCCEEDED_KIND,
    REFUND_SUCCEEDED_KIND,
    merchant_pending_account,
)
from services.ledger.handlers import PRODUCER, post_entry
from services.ledger.settlement import SETTLEMENT_ENTRY_RULES, is_due

log = structlog.get_logger(__name__)

# The entries whose merchant postings settlement moves on.
SETTLED_KINDS = (PAYMENT_SUCCEEDED_KIND, REFUND_SUCCEEDED_KIND)
_BATCH_NAMESPACE = uuid.UUID("4d3c8f0e-61a2-4b1b-9c55-0e7f0d3b2a18")

# A merchant's unsettled postings on its pending account, whoever's entry they are in (a
# payment shared out in splits credits its recipients' pending accounts too).
_DUE_CANDIDATES = """
SELECT e.entry_id, e.kind, e.occurred_at, e.source_event_id::text AS source_event_id,
       p.currency, sum(p.amount_minor)::bigint AS amount_minor
FROM entry_parties ep
JOIN journal_entries e ON e.entry_id = ep.entry_id
JOIN postings p ON p.entry_id = e.entry_id AND p.account_id = $2
WHERE ep.merchant_id = $1 AND e.kind = ANY($3::text[])
  AND NOT EXISTS (
      SELECT 1 FROM settlement_lines l WHERE l.entry_id = e.entry_id AND l.account_id = $2
  )
GROUP BY e.entry_id, e.kind, e.occurred_at, e.source_event_id, p.currency
ORDER BY e.occurred_at, e.entry_id
"""


def batch_id_for(merchant_id: str, currency: str, day: date) -> str:
    return f"stl_{uuid.uuid5(_BATCH_NAMESPACE, f'{merchant_id}/{currency}/{day}').hex}"


def terms_of(row: asyncpg.Record) -> SettlementTerms:
    """A merchant's terms as the ledger keeps them in `merchant_terms`."""
    return SettlementTerms(
        delay_days=row["delay_days"],
        cutoff_time=row["cutoff_time"],
        time_zone=row["time_zone"],
        payout_minimum_minor=row["payout_minimum_minor"],
    )


async def record_merchant_terms(
    connection: asyncpg.Connection, event: MerchantOnboarded | MerchantUpdated
) -> None:
    """Keep the merchant's settlement terms; every merchant event carries the whole profile."""
    terms = event.payload.settlement_terms
    await connection.execute(
        "INSERT INTO merchant_terms (merchant_id, delay_days, cutoff_time, time_zone,"
        " payout_minimum_minor) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id)"
        " DO UPDATE SET delay_days = EXCLUDED.delay_days, cutoff_time = EXCLUDED.cutoff_time,"
        " time_zone = EXCLUDED.time_zone, payout_minimum_minor = EXCLUDED.payout_minimum_minor",
        event.aggregate_id,
        terms.delay_days,
        terms.cutoff_time,
        terms.time_zone,
        terms.payout_minimum_minor,
    )


async def run_settlements(
    pool: asyncpg.Pool, as_of: date, clock: Clock
) -> list[SettlementBatchSummary]:
    """Settle every merchant's entries due by `as_of`; returns the batches created now."""
    created: list[SettlementBatchSummary] = []
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('ledger:settlement'))")
        for row in await connection.fetch("SELECT * FROM merchant_terms ORDER BY merchant_id"):
            terms = terms_of(row)
            created += await _settle_merchant(connection, row["merchant_id"], terms, as_of, clock)
    return created


async def _settle_merchant(
    connection: Connection,
    merchant_id: str,
    terms: SettlementTerms,
    as_of: date,
    clock: Clock,
) -> list[SettlementBatchSummary]:
    candidates = await connection.fetch(
        _DUE_CANDIDATES, merchant_id, merchant_pending_account(merchant_id), list(SETTLED_KINDS)
    )
    by_currency: defaultdict[str, list[SettlementLine]] = defaultdict(list)
    for candidate in candidates:
        if is_due(candidate["occurred_at"], terms, as_of):
            by_currency[candidate["currency"].strip()].append(
                SettlementLine(
                    entry_id=candidate["entry_id"],
                    kind=candidate["kind"],
                    source_event_id=candidate["source_event_id"],
                    # Pending is credit-normal: what the merchant is owed is the negation.
                    amount_minor=-candidate["amount_minor"],
                )
            )
    batches = []
    for currency, lines in sorted(by_currency.items()):
        batch_id = batch_id_for(merchant_id, currency, as_of)
        exists = await connection.fetchval(
            "SELECT true FROM settlement_batches WHERE batch_id = $1", batch_id
        )
        if exists:
            continue  # the day is settled; these lines wait for the next day's run
        net = sum(line.amount_minor for line in lines)
        payload = SettlementCreatedPayload(
            batch_id=batch_id,
            currency=currency,
            settlement_date=as_of,
            net_minor=net,
            lines=tuple(lines),
        )
        (event,) = await record_decision(
            connection,
            Decision(events=(Emit(SettlementCreated, payload),)),
            stream_id=batch_id,
            expected_version=0,
            merchant_id=merchant_id,
            producer=PRODUCER,
            clock=clock,
            cause=None,
            correlation_id=batch_id,
        )
        entry_id = None
        kind, postings_of = SETTLEMENT_ENTRY_RULES[type(event)]
        postings = postings_of(event)
        if postings:
            entry_id = await post_entry(connection, event, kind, postings, clock=clock)
        await connection.execute(
            "INSERT INTO settlement_batches (batch_id, merchant_id, currency, settlement_date,"
            " net_minor, entry_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            batch_id,
            merchant_id,
            currency,
            as_of,
            net,
            entry_id,
            event.occurred_at,
        )
        await connection.executemany(
            "INSERT INTO settlement_lines"
            " (batch_id, entry_id, account_id, kind, source_event_id, amount_minor)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (
                    batch_id,
                    line.entry_id,
                    merchant_pending_account(merchant_id),
                    line.kind,
                    line.source_event_id,
                    line.amount_minor,
                )
                for line in lines
            ],
        )
        log.info("settlement_created", batch_id=batch_id, net_minor=net, lines=len(lines))
        batches.append(
            SettlementBatchSummary(
                batch_id=batch_id,
                merchant_id=merchant_id,
                currency=currency,
                settlement_date=as_of,
                net_minor=net,
                line_count=len(lines),
            )
        )
    return batches


async def load_batch_lines(
    connection: asyncpg.Connection | asyncpg.Pool, batch_id: str
) -> tuple[asyncpg.Record, list[SettlementLine]] | None:
    batch = await connection.fetchrow(
        "SELECT * FROM settlement_batches WHERE batch_id = $1", batch_id
    )
    if batch is None:
        return None
    rows = await connection.fetch(
        "SELECT entry_id, kind, source_event_id, amount_minor FROM settlement_lines"
        " WHERE batch_id = $1 ORDER BY entry_id",
        batch_id,
    )
    return batch, [SettlementLine(**dict(row)) for row in rows]
