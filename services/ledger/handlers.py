"""The ledger's use cases. Each takes an open connection inside the caller's transaction.

The inbox consumer opens the transaction and records the source event's id in it; the
journal rows, the balance changes and the `JournalEntryPosted` event (the outbox row)
are written in that same transaction, so they commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog

from schemas import Event
from schemas.ledger import JournalEntryPosted, JournalEntryPostedPayload, Posting
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.event_store import record_decision
from services.ledger.domain import ENTRY_RULES, check_balanced, entry_id_for, merchant_of_account

log = structlog.get_logger(__name__)

PRODUCER = "ledger"

BALANCES_LIMIT_MAX = 10_000

_INSERT_ENTRY = """
INSERT INTO journal_entries (entry_id, source_event_id, kind, merchant_id, occurred_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING seq
"""

_INSERT_PARTIES = """
INSERT INTO entry_parties (merchant_id, seq, entry_id)
SELECT merchant_id, $2, $3 FROM unnest($1::text[]) AS merchant_id
"""

_INSERT_POSTING = """
INSERT INTO postings (entry_id, line, account_id, currency, amount_minor)
VALUES ($1, $2, $3, $4, $5)
"""

# Balances are changed atomically from the postings just written: never read-then-write.
# Lines of one entry on the same account are summed first (one row may be changed only
# once per statement), and rows are taken in key order so that concurrent entries lock
# shared accounts in the same order.
_APPLY_TO_BALANCES = """
INSERT INTO account_balances (account_id, currency, balance_minor)
SELECT account_id, currency, sum(amount_minor)::bigint
FROM postings
WHERE entry_id = $1
GROUP BY account_id, currency
ORDER BY account_id, currency
ON CONFLICT (account_id, currency)
DO UPDATE SET balance_minor = account_balances.balance_minor + EXCLUDED.balance_minor
"""

_SELECT_BALANCES = r"""
SELECT account_id, currency, balance_minor
FROM account_balances
WHERE account_id LIKE $1 ESCAPE '\'
ORDER BY account_id, currency
LIMIT $2
"""


@dataclass(frozen=True)
class AccountBalance:
    """One account's balance in one currency: the sum of its postings (debits positive)."""

    account_id: str
    currency: str
    balance_minor: int


async def post_event(connection: asyncpg.Connection, event: Event, *, clock: Clock) -> str | None:
    """Post the journal entry that `event` calls for (see ENTRY_RULES and `post_entry`)."""
    kind, postings_of = ENTRY_RULES[type(event)]
    return await post_entry(connection, event, kind, postings_of(event), clock=clock)


async def post_entry(
    connection: Connection,
    event: Event,
    kind: str,
    postings: Sequence[Posting],
    *,
    clock: Clock,
) -> str | None:
    """Post the journal entry that records `event` and emit `JournalEntryPosted`.

    Returns the entry id, or None when the entry already exists (the same source event
    posted before, e.g. during a replay), in which case nothing is written.
    Raises UnbalancedEntry or InvalidMerchantId (never retried: the consumer dead-letters
    the event), ConcurrencyConflict when another writer emitted for the same entry first.
    """
    check_balanced(postings)
    entry_id = entry_id_for(event.event_id)
    seq = await connection.fetchval(
        _INSERT_ENTRY,
        entry_id,
        event.event_id,
        kind,
        event.merchant_id,
        # The entry takes effect when the source fact was recorded, not when the ledger
        # got round to it, so a rebuild from the log dates every entry the same.
        event.occurred_at,
    )
    if seq is None:
        log.info("journal_entry_exists", entry_id=entry_id)
        return None
    await _insert_postings(connection, entry_id, postings)
    parties = sorted(
        {
            merchant_id
            for posting in postings
            if (merchant_id := merchant_of_account(posting.account_id)) is not None
        }
    )
    if parties:
        await connection.execute(_INSERT_PARTIES, parties, seq, entry_id)
    await connection.execute(_APPLY_TO_BALANCES, entry_id)
    payload = JournalEntryPostedPayload(
        entry_id=entry_id,
        kind=kind,
        source_event_id=str(event.event_id),
        source_aggregate_id=event.aggregate_id,
        postings=tuple(postings),
    )
    await record_decision(
        connection,
        Decision(events=(Emit(JournalEntryPosted, payload),)),
        stream_id=entry_id,
        expected_version=0,
        merchant_id=event.merchant_id,
        producer=PRODUCER,
        clock=clock,
        cause=event,
    )
    log.info("journal_entry_posted", entry_id=entry_id, kind=kind)
    return entry_id


async def _insert_postings(
    connection: Connection, entry_id: str, postings: Sequence[Posting]
) -> None:
    await connection.executemany(
        _INSERT_POSTING,
        [
            (entry_id, line, posting.account_id, posting.currency, posting.amount_minor)
            for line, posting in enumerate(postings, start=1)
        ],
    )


def _like_prefix(prefix: str) -> str:
    # Account ids contain `_` (merchant ids like `mch_1`), a LIKE wildcard: escape it.
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


async def read_balances(
    connection: asyncpg.Connection | asyncpg.Pool, account_prefix: str, *, limit: int
) -> list[AccountBalance]:
    """Balances of the accounts whose id starts with `account_prefix`, by account id.

    At most `limit` rows (1 to BALANCES_LIMIT_MAX; ValueError otherwise).
    """
    if not 1 <= limit <= BALANCES_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {BALANCES_LIMIT_MAX}, got {limit}")
    rows = await connection.fetch(_SELECT_BALANCES, _like_prefix(account_prefix), limit)
    return [
        AccountBalance(
            account_id=row["account_id"],
            currency=row["currency"],
            balance_minor=row["balance_minor"],
        )
        for row in rows
    ]
