"""Pure rules of the operations reports: report periods, the success rate, payment fees.

A report covers the payments *created* in its period, and periods are UTC calendar days
or months: `[starts_at, ends_at)` with both bounds at 00:00 UTC. No database, broker or
logger here, so every edge (leap days, December to January) is tested in microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from schemas.ledger import Posting
from services.gateway.domain import FINAL_STATUSES

# The ledger's names for what the gateway reads from JournalEntryPosted. They are part of
# the event's contract (the gateway must not import services.ledger); the ledger's unit
# tests pin the same values.
PAYMENT_SUCCEEDED_KIND = "payment_succeeded"
FEE_REVENUE_ACCOUNT = "platform:fee_revenue"

# How payment statuses count in a report. Every payment that ended without the money
# moving (declined or failed at the channel, canceled, expired) counts as not succeeded;
# the rest are still open and stay out of the success rate.
SUCCEEDED_STATUS = "succeeded"
NOT_SUCCEEDED_STATUSES: tuple[str, ...] = tuple(sorted(FINAL_STATUSES - {SUCCEEDED_STATUS}))

SUCCESS_RATE_DECIMALS = 4
_SUCCESS_RATE_SCALE: int = 10**SUCCESS_RATE_DECIMALS

# ASCII digits only: `\d` would also accept other scripts' digits.
_DAY_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}")


class InvalidReportPeriod(ValueError):
    """A `date` or `month` that names no UTC day or month a report can cover."""

    code = "invalid_request"


@dataclass(frozen=True)
class ReportPeriod:
    """A half-open UTC interval: `starts_at` is in the period, `ends_at` is not."""

    starts_at: datetime
    ends_at: datetime


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def day_period(text: str) -> ReportPeriod:
    """The UTC day `text` (`YYYY-MM-DD`) names.

    Raises InvalidReportPeriod for another format, a day the calendar lacks
    (`2025-02-29`), or the last representable day (its end would be in year 10000).
    """
    if not _DAY_FORMAT.fullmatch(text):
        raise InvalidReportPeriod(f"expected a UTC day as YYYY-MM-DD, got {text!r}")
    try:
        day = date.fromisoformat(text)
        next_day = day + timedelta(days=1)
    except (ValueError, OverflowError) as error:
        raise InvalidReportPeriod(f"{text!r} is not a day a report can cover: {error}") from error
    return ReportPeriod(starts_at=_midnight(day), ends_at=_midnight(next_day))


def month_period(text: str) -> ReportPeriod:
    """The UTC calendar month `text` (`YYYY-MM`) names; December ends on 1 January.

    Raises InvalidReportPeriod for another format, a month outside 01-12, or a period
    that would end in year 10000.
    """
    if not _MONTH_FORMAT.fullmatch(text):
        raise InvalidReportPeriod(f"expected a UTC month as YYYY-MM, got {text!r}")
    year, month = int(text[:4]), int(text[5:])
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    try:
        first_day = date(year, month, 1)
        next_first_day = date(next_year, next_month, 1)
    except ValueError as error:
        raise InvalidReportPeriod(f"{text!r} is not a month a report can cover: {error}") from error
    return ReportPeriod(starts_at=_midnight(first_day), ends_at=_midnight(next_first_day))


def success_rate(succeeded: int, not_succeeded: int) -> float | None:
    """`succeeded / (succeeded + not_succeeded)` to 4 decimals, ties to even; None when
    no payment has finished (a rate of nothing is unknown, not 0).

    The rounding is done on integers, so the same counts always give the same number.
    """
    finished = succeeded + not_succeeded
    if finished == 0:
        return None
    quotient, remainder = divmod(succeeded * _SUCCESS_RATE_SCALE, finished)
    if 2 * remainder > finished or (2 * remainder == finished and quotient % 2 == 1):
        quotient += 1
    return quotient / _SUCCESS_RATE_SCALE


def payment_fee_minor(postings: Sequence[Posting]) -> int:
    """The fee a `payment_succeeded` journal entry charged: the negated sum of its
    postings on the fee revenue account (a credit), 0 when it has none (the ledger
    leaves out zero lines)."""
    return -sum(
        posting.amount_minor for posting in postings if posting.account_id == FEE_REVENUE_ACCOUNT
    )
