"""The ledger's use cases. Each takes an open connection inside the caller's transaction.

The inbox consumer opens the transaction and records the source event's id in it; the
journal rows, the balance changes and the `JournalEntryPosted` event (the outbox row)
are written in that same transaction, so they commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from schemas import Event, new_event
from schemas.ledger import JournalEntryPosted, JournalEntryPostedPayload, Posting
from services.common.clock import Clock
from services.common.db import Connection
from services.common.event_store import append_new_streams
from services.ledger.domain import ENTRY_RULES, check_balanced, entry_id_for, merchant_of_account

log = structlog.get_logger(__name__)

PRODUCER = "ledger"

BALANCES_LIMIT_MAX = 10_000

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
    posted = await _post_planned(
        connection, [_PlannedEntry(event, entry_id_for(event.event_id), kind, postings)], clock
    )
    return posted[0] if posted else None


_INSERT_ENTRIES = """
INSERT INTO journal_entries (entry_id, source_event_id, kind, merchant_id, occurred_at)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING entry_id, seq
"""

# All postings of all entries in one statement: the database checks the balance of every
# entry an INSERT on postings touched at the end of that statement.
_INSERT_POSTINGS = """
INSERT INTO postings (entry_id, line, account_id, currency, amount_minor)
SELECT * FROM unnest($1::text[], $2::smallint[], $3::text[], $4::text[], $5::bigint[])
"""

_INSERT_PARTIES = """
INSERT INTO entry_parties (merchant_id, seq, entry_id)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])
"""

# The balance deltas of every entry posted, summed per account and applied in account
# order: one row lock per account, taken in the same order by every writer. Never
# read-then-write.
_APPLY_ENTRIES_TO_BALANCES = """
INSERT INTO account_balances (account_id, currency, balance_minor)
SELECT account_id, currency, sum(amount_minor)::bigint
FROM postings
WHERE entry_id = ANY($1::text[])
GROUP BY account_id, currency
ORDER BY account_id, currency
ON CONFLICT (account_id, currency)
DO UPDATE SET balance_minor = account_balances.balance_minor + EXCLUDED.balance_minor
"""


@dataclass(frozen=True)
class _PlannedEntry:
    event: Event
    entry_id: str
    kind: str
    postings: Sequence[Posting]


async def post_events(
    connection: asyncpg.Connection, events: Sequence[Event], *, clock: Clock
) -> list[str]:
    """Post the journal entries `events` call for (ENTRY_RULES), set-wise: one statement
    per table for the whole batch (entries, postings, parties, balances, JournalEntryPosted
    rows).

    The same rules and checks as `post_entry`, entry by entry; an event whose entry exists
    already is skipped. Returns the ids of the entries posted, in event order.
    Raises UnbalancedEntry or InvalidMerchantId for an event the rules refuse (the whole
    call writes nothing then: the consumer isolates that event), ConcurrencyConflict when
    another writer emitted for one of the entries first.
    """
    planned: list[_PlannedEntry] = []
    for event in events:
        kind, postings_of = ENTRY_RULES[type(event)]
        postings = postings_of(event)
        check_balanced(postings)
        planned.append(_PlannedEntry(event, entry_id_for(event.event_id), kind, postings))
    return await _post_planned(connection, planned, clock)


async def _post_planned(
    connection: Connection, planned: Sequence[_PlannedEntry], clock: Clock
) -> list[str]:
    if not planned:
        return []
    rows = await connection.fetch(
        _INSERT_ENTRIES,
        [entry.entry_id for entry in planned],
        [entry.event.event_id for entry in planned],
        [entry.kind for entry in planned],
        [entry.event.merchant_id for entry in planned],
        # The entry takes effect when the source fact was recorded, not when the ledger
        # got round to it, so a rebuild from the log dates every entry the same.
        [entry.event.occurred_at for entry in planned],
    )
    seq_of = {row["entry_id"]: row["seq"] for row in rows}
    new = [entry for entry in planned if entry.entry_id in seq_of]
    for entry in planned:
        if entry.entry_id not in seq_of:
            log.info("journal_entry_exists", entry_id=entry.entry_id)
    if not new:
        return []
    lines = [
        (entry.entry_id, line, posting.account_id, posting.currency, posting.amount_minor)
        for entry in new
        for line, posting in enumerate(entry.postings, start=1)
    ]
    await connection.execute(_INSERT_POSTINGS, *_columns(lines, 5))
    parties = [
        (merchant_id, seq_of[entry.entry_id], entry.entry_id)
        for entry in new
        for merchant_id in _parties(entry.postings)
    ]
    if parties:
        await connection.execute(_INSERT_PARTIES, *_columns(parties, 3))
    entry_ids = [entry.entry_id for entry in new]
    await connection.execute(_APPLY_ENTRIES_TO_BALANCES, entry_ids)
    now = clock.now()
    await append_new_streams(connection, [_entry_posted(entry, now) for entry in new])
    # One line per batch; the correlation ids keep each payment traceable through it.
    log.info(
        "journal_entries_posted",
        count=len(new),
        kinds=sorted({entry.kind for entry in new}),
        entry_ids=entry_ids,
        correlation_ids=sorted({entry.event.correlation_id for entry in new}),
    )
    return entry_ids


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as columns, for `unnest` parameters."""
    columns: list[list[object]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _parties(postings: Sequence[Posting]) -> list[str]:
    """The merchants whose accounts an entry's postings touch, in id order."""
    merchants = {merchant_of_account(posting.account_id) for posting in postings}
    return sorted(merchant for merchant in merchants if merchant is not None)


def _entry_posted(entry: _PlannedEntry, now: datetime) -> JournalEntryPosted:
    return new_event(
        JournalEntryPosted,
        JournalEntryPostedPayload(
            entry_id=entry.entry_id,
            kind=entry.kind,
            source_event_id=str(entry.event.event_id),
            source_aggregate_id=entry.event.aggregate_id,
            postings=tuple(entry.postings),
        ),
        aggregate_id=entry.entry_id,
        aggregate_version=1,
        merchant_id=entry.event.merchant_id,
        producer=PRODUCER,
        occurred_at=now,
        correlation_id=entry.event.correlation_id,
        causation_id=str(entry.event.event_id),
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
