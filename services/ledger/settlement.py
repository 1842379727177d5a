"""Settlement rules, pure: when captured funds become payable to a merchant, and the entry
that moves them from pending to available.

T+N with a cutoff in the merchant's time zone: a fact recorded on local day T before the
cutoff time belongs to day T, at or after it to day T+1; it settles on that day plus
`delay_days`. With `delay_days = 0` (T+0) funds settle on the day they were captured.
A settlement batch covers one merchant, one currency and one settlement day; its net may
be negative (refunds after earlier settlements), which moves money back from available.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from schemas.envelope import Event
from schemas.ledger import Posting, SettlementCreated
from schemas.merchants import SettlementTerms
from services.common.invariant import invariant
from services.ledger.domain import (
    check_balanced,
    merchant_available_account,
    merchant_pending_account,
)


def business_day(occurred_at: datetime, terms: SettlementTerms) -> date:
    """The merchant's local day a fact belongs to, given the daily cutoff time."""
    invariant(occurred_at.tzinfo is not None, "occurred_at must be timezone-aware")
    local = occurred_at.astimezone(ZoneInfo(terms.time_zone))
    hours, minutes = (int(part) for part in terms.cutoff_time.split(":"))
    cutoff = time(hours, minutes)
    if cutoff != time(0, 0) and local.time() >= cutoff:
        return local.date() + timedelta(days=1)
    return local.date()


def settlement_day(occurred_at: datetime, terms: SettlementTerms) -> date:
    """The day funds recorded at `occurred_at` settle: their business day plus N."""
    return business_day(occurred_at, terms) + timedelta(days=terms.delay_days)


def is_due(occurred_at: datetime, terms: SettlementTerms, as_of: date) -> bool:
    """Whether funds recorded at `occurred_at` settle in a run for day `as_of`."""
    return settlement_day(occurred_at, terms) <= as_of


def settlement_entry(merchant_id: str, currency: str, net_minor: int) -> list[Posting]:
    """The postings that move a batch's net from pending to available.

    Both accounts are credit-normal: a positive net debits pending and credits available;
    a negative net (refunds exceeding captures) moves money back. A zero net has no entry.
    """
    invariant(net_minor != 0, "a settlement with a zero net posts no entry")
    postings = [
        Posting(
            account_id=merchant_pending_account(merchant_id),
            currency=currency,
            amount_minor=net_minor,
        ),
        Posting(
            account_id=merchant_available_account(merchant_id),
            currency=currency,
            amount_minor=-net_minor,
        ),
    ]
    check_balanced(postings)
    return postings


SETTLEMENT_KIND = "settlement"


def settlement_created_entry(event: SettlementCreated) -> list[Posting]:
    """The entry a settlement batch posts; none (empty) when its lines net to zero."""
    if event.payload.net_minor == 0:
        return []
    return settlement_entry(event.merchant_id, event.payload.currency, event.payload.net_minor)


# The entry a settlement event posts, from the event alone (live and in a rebuild).
SETTLEMENT_ENTRY_RULES: dict[type[Event], tuple[str, Callable[[Any], list[Posting]]]] = {
    SettlementCreated: (SETTLEMENT_KIND, settlement_created_entry),
}
