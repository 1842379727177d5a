"""A merchant's balance transactions: every posting on one of the merchant's accounts, with
the journal entry and the source event that made it, newest first.

Read-only. Pages are cut by a keyset on (entry `seq`, posting `line`), never by an offset:
the journal only grows, and an entry posted while a merchant pages through its history
cannot shift, repeat or hide the transactions still to come.

Merchant accounts are credit-normal (see `services.ledger.domain`): a transaction's
`amount_minor` is the negated posting, i.e. what it added to the merchant's balance in that
bucket (a payment's net is positive, a refund negative).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.common.db import Connection
from services.common.service import ServiceContext
from services.ledger.domain import InvalidMerchantId, merchant_account_prefix
from services.ledger.handlers import _like_prefix

BALANCE_TRANSACTIONS_LIMIT_MAX = 1000
BALANCE_TRANSACTION_ID_PREFIX = "btx_"
# The largest line a posting may have (its column is a smallint).
_LINE_MAX = 32_767
_BALANCE_TRANSACTION_ID = re.compile(
    re.escape(BALANCE_TRANSACTION_ID_PREFIX) + r"([A-Za-z0-9_]{1,120})_([0-9]{1,5})", re.ASCII
)

# `entry_parties` names every merchant whose accounts an entry touches (the recipients of
# a payment's splits included), so the merchant's entries are found through its
# (merchant_id, seq) key and their postings filtered to the merchant's own accounts.
_SELECT_CURSOR = r"""
SELECT ep.seq
FROM entry_parties ep JOIN postings p ON p.entry_id = ep.entry_id
WHERE ep.entry_id = $1 AND p.line = $2 AND ep.merchant_id = $3
  AND p.account_id LIKE $4 ESCAPE '\'
"""

# `e.seq <= $3` repeats the row comparison's first column so the index bounds the scan.
_SELECT_PAGE = r"""
SELECT ep.seq, p.line, e.entry_id, e.kind, e.source_event_id::text AS source_event_id,
       e.occurred_at, p.account_id, p.currency, p.amount_minor
FROM entry_parties ep
JOIN journal_entries e ON e.entry_id = ep.entry_id
JOIN postings p ON p.entry_id = ep.entry_id
WHERE ep.merchant_id = $1 AND p.account_id LIKE $2 ESCAPE '\'
  AND ($3::bigint IS NULL OR (ep.seq <= $3 AND (ep.seq, p.line) < ($3, $4::smallint)))
ORDER BY ep.seq DESC, p.line DESC
LIMIT $5
"""


class UnknownCursor(LookupError):
    """`starting_after` names no balance transaction of this merchant."""

    code = "unknown_cursor"


@dataclass(frozen=True)
class BalanceTransaction:
    """One posting on a merchant account, as the merchant sees it."""

    id: str
    entry_id: str
    line: int
    kind: str
    source_event_id: str
    bucket: str
    currency: str
    amount_minor: int
    occurred_at: datetime


def balance_transaction_id(entry_id: str, line: int) -> str:
    """The stable public id of posting `line` of `entry_id`, e.g. `btx_je_4f0c..._2`."""
    return f"{BALANCE_TRANSACTION_ID_PREFIX}{entry_id}_{line}"


def parse_balance_transaction_id(transaction_id: str) -> tuple[str, int] | None:
    """(entry id, line) of a balance transaction id, or None when it is not one."""
    # Strict, so that nothing a client makes up (a NUL, say, which PostgreSQL refuses in
    # text) reaches the database: an id that cannot exist is simply unknown.
    match = _BALANCE_TRANSACTION_ID.fullmatch(transaction_id)
    if match is None:
        return None
    line = int(match.group(2))
    return (match.group(1), line) if 1 <= line <= _LINE_MAX else None


async def list_balance_transactions(
    connection: Connection | asyncpg.Pool,
    merchant_id: str,
    *,
    limit: int,
    starting_after: str | None = None,
) -> tuple[list[BalanceTransaction], bool]:
    """The merchant's balance transactions newest first, and whether older ones remain.

    `starting_after` is the id of the last transaction of the previous page. At most
    `limit` transactions (1 to BALANCE_TRANSACTIONS_LIMIT_MAX; ValueError otherwise).
    Raises InvalidMerchantId for a merchant id that cannot name accounts, and
    UnknownCursor when `starting_after` is not one of this merchant's transactions.
    """
    if not 1 <= limit <= BALANCE_TRANSACTIONS_LIMIT_MAX:
        raise ValueError(
            f"limit must be between 1 and {BALANCE_TRANSACTIONS_LIMIT_MAX}, got {limit}"
        )
    prefix = merchant_account_prefix(merchant_id)
    # Escaped as `read_balances` does: merchant ids contain `_`, a LIKE wildcard.
    accounts = _like_prefix(prefix)
    cursor_seq: int | None = None
    cursor_line: int | None = None
    if starting_after is not None:
        parsed = parse_balance_transaction_id(starting_after)
        if parsed is not None:
            cursor_line = parsed[1]
            cursor_seq = await connection.fetchval(
                _SELECT_CURSOR, parsed[0], cursor_line, merchant_id, accounts
            )
        if cursor_seq is None:
            raise UnknownCursor(f"starting_after {starting_after!r} is not in this list")
    rows = await connection.fetch(
        _SELECT_PAGE, merchant_id, accounts, cursor_seq, cursor_line, limit + 1
    )
    page = [_transaction(row, prefix) for row in rows[:limit]]
    return page, len(rows) > limit


def _transaction(row: asyncpg.Record, prefix: str) -> BalanceTransaction:
    return BalanceTransaction(
        id=balance_transaction_id(row["entry_id"], row["line"]),
        entry_id=row["entry_id"],
        line=row["line"],
        kind=row["kind"],
        source_event_id=row["source_event_id"],
        bucket=row["account_id"][len(prefix) :],
        currency=row["currency"].strip(),
        # Merchant accounts are credit-normal: the merchant's side is the negation.
        amount_minor=-row["amount_minor"],
        occurred_at=row["occurred_at"],
    )


class BalanceTransactionView(BaseModel):
    id: str = Field(description="Stable id: `btx_{entry_id}_{line}`.")
    entry_id: str
    line: int
    kind: str = Field(description="The entry's kind: payment_succeeded, settlement, ...")
    source_event_id: str = Field(description="The event the entry records.")
    bucket: str = Field(description="The merchant account: pending, available, ...")
    currency: str
    amount_minor: int = Field(
        description="What the posting added to the merchant's bucket: the negated posting."
    )
    occurred_at: datetime


class BalanceTransactionPage(BaseModel):
    data: list[BalanceTransactionView]
    has_more: bool


router = APIRouter()


def _problem(code: str, detail: str) -> JSONResponse:
    return JSONResponse({"code": code, "detail": detail}, status_code=422)


@router.get(
    "/internal/v1/balance_transactions",
    response_model=BalanceTransactionPage,
    responses={422: {"description": "`unknown_cursor` or `invalid_merchant_id`"}},
)
async def get_balance_transactions(
    request: Request,
    merchant_id: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=BALANCE_TRANSACTIONS_LIMIT_MAX)] = 100,
    starting_after: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    """The merchant's postings newest first (read-only); page with `starting_after`."""
    context: ServiceContext = request.app.state.context
    try:
        page, has_more = await list_balance_transactions(
            context.pool, merchant_id, limit=limit, starting_after=starting_after
        )
    except (UnknownCursor, InvalidMerchantId) as error:
        return _problem(error.code, str(error))
    return BalanceTransactionPage(
        data=[BalanceTransactionView(**asdict(transaction)) for transaction in page],
        has_more=has_more,
    )
