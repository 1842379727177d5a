"""Operations reports for admins: payment volume, counts, success rate and fees of a UTC
day or month, per channel, per merchant and for the whole platform.

Reports are read from the gateway's projections (`payments`, joined with the fees the
ledger posted in `payment_fees`), so they trail the event log by the projection lag.
Amounts are integer minor units and are never added across currencies: every group is
per currency.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BaseModel, Field

from schemas.common import Channel
from services.gateway.auth import AdminDependency
from services.gateway.problems import PROBLEM_RESPONSES
from services.gateway.reports import (
    NOT_SUCCEEDED_STATUSES,
    SUCCEEDED_STATUS,
    ReportPeriod,
    day_period,
    month_period,
    success_rate,
)

router = APIRouter(
    prefix="/v1/admin/reports",
    tags=["admin"],
    dependencies=[AdminDependency],
    responses=PROBLEM_RESPONSES,
)

# A month of a large platform has many merchants: the merchant list is capped, and says
# so, rather than growing one response without bound.
MERCHANT_GROUPS_MAX = 10_000


def _checked(parse: Callable[[str], ReportPeriod]) -> Callable[[str], str]:
    def check(text: str) -> str:
        parse(text)  # raises InvalidReportPeriod, a ValueError: a 422 `invalid_request`
        return text

    return check


ReportDay = Annotated[
    str,
    Query(
        alias="date",
        description="The UTC day, `YYYY-MM-DD`.",
        examples=["2026-11-22"],
    ),
    AfterValidator(_checked(day_period)),
]
ReportMonth = Annotated[
    str,
    Query(description="The UTC calendar month, `YYYY-MM`.", examples=["2026-11"]),
    AfterValidator(_checked(month_period)),
]


class ReportFigures(BaseModel):
    """What the payments of one group (all in one currency) came to."""

    currency: str
    payments: int = Field(description="Payments created in the period.")
    succeeded: int = Field(description="Of them, payments that succeeded.")
    failed: int = Field(
        description="Of them, payments that ended without success: failed (declined or"
        " failed at the channel), canceled or expired."
    )
    open: int = Field(
        description="Of them, payments not finished yet (e.g. awaiting the payer); they"
        " are left out of `success_rate`."
    )
    success_rate: float | None = Field(
        description="`succeeded / (succeeded + failed)`, 4 decimals rounded half to even;"
        " null when no payment has finished."
    )
    volume: int = Field(description="Minor units of the succeeded payments.")
    refunded: int = Field(
        description="Minor units refunded so far of the succeeded payments (whenever the"
        " refund happened)."
    )
    fees: int = Field(description="Minor units of the fees the ledger charged on them.")
    fees_pending: int = Field(
        description="Succeeded payments whose fee the ledger has not posted yet; `fees`"
        " does not include them."
    )


class ChannelReportFigures(ReportFigures):
    channel: Channel


class MerchantReportFigures(ReportFigures):
    merchant_id: str


class ReportView(BaseModel):
    starts_at: dt.datetime = Field(description="Start of the period (UTC), included.")
    ends_at: dt.datetime = Field(description="End of the period (UTC), excluded.")
    generated_at: dt.datetime
    totals: list[ReportFigures] = Field(description="The whole platform, per currency.")
    channels: list[ChannelReportFigures] = Field(description="Per channel and currency.")
    merchants: list[MerchantReportFigures] = Field(
        description="Per merchant and currency, ordered by merchant id and currency."
    )
    merchants_truncated: bool = Field(
        description=f"True when more than {MERCHANT_GROUPS_MAX} merchant groups exist and"
        " only the first are listed."
    )


class DailyReportView(ReportView):
    object: str = "daily_report"
    date: dt.date


class MonthlyReportView(ReportView):
    object: str = "monthly_report"
    month: str = Field(description="`YYYY-MM`")


# Every group's figures over the payments created in [$1, $2), with their fees.
_FIGURES = (
    " count(*) AS payments,"
    " count(*) FILTER (WHERE p.status = $3) AS succeeded,"
    " count(*) FILTER (WHERE p.status = ANY($4::text[])) AS failed,"
    " COALESCE(sum(p.amount_minor) FILTER (WHERE p.status = $3), 0)::bigint AS volume,"
    " COALESCE(sum(p.amount_refunded_minor) FILTER (WHERE p.status = $3), 0)::bigint"
    "   AS refunded,"
    " COALESCE(sum(f.fee_minor) FILTER (WHERE p.status = $3), 0)::bigint AS fees,"
    " count(*) FILTER (WHERE p.status = $3 AND f.payment_id IS NULL) AS fees_pending"
    " FROM payments p LEFT JOIN payment_fees f ON f.payment_id = p.payment_id"
    " WHERE p.created_at >= $1 AND p.created_at < $2"
)
_TOTALS_AND_CHANNELS = (
    "SELECT p.channel, p.currency, GROUPING(p.channel) = 1 AS platform,"
    + _FIGURES
    + " GROUP BY GROUPING SETS ((p.currency), (p.channel, p.currency))"
    " ORDER BY p.channel NULLS FIRST, p.currency"
)
_MERCHANTS = (
    "SELECT p.merchant_id, p.currency,"
    + _FIGURES
    + " GROUP BY p.merchant_id, p.currency ORDER BY p.merchant_id, p.currency LIMIT $5"
)


def _figures(row: asyncpg.Record) -> dict[str, Any]:
    finished_not_succeeded = row["failed"]
    return {
        "currency": row["currency"],
        "payments": row["payments"],
        "succeeded": row["succeeded"],
        "failed": finished_not_succeeded,
        "open": row["payments"] - row["succeeded"] - finished_not_succeeded,
        "success_rate": success_rate(row["succeeded"], finished_not_succeeded),
        "volume": row["volume"],
        "refunded": row["refunded"],
        "fees": row["fees"],
        "fees_pending": row["fees_pending"],
    }


@dataclass(frozen=True)
class _Groups:
    totals: list[ReportFigures]
    channels: list[ChannelReportFigures]
    merchants: list[MerchantReportFigures]
    merchants_truncated: bool


async def _groups(pool: asyncpg.Pool, period: ReportPeriod) -> _Groups:
    arguments = (period.starts_at, period.ends_at, SUCCEEDED_STATUS, list(NOT_SUCCEEDED_STATUSES))
    # One snapshot for both queries, so the merchants add up to the totals.
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        channel_rows = await connection.fetch(_TOTALS_AND_CHANNELS, *arguments)
        merchant_rows = await connection.fetch(_MERCHANTS, *arguments, MERCHANT_GROUPS_MAX + 1)
    return _Groups(
        totals=[ReportFigures(**_figures(row)) for row in channel_rows if row["platform"]],
        channels=[
            ChannelReportFigures(channel=row["channel"], **_figures(row))
            for row in channel_rows
            if not row["platform"]
        ],
        merchants=[
            MerchantReportFigures(merchant_id=row["merchant_id"], **_figures(row))
            for row in merchant_rows[:MERCHANT_GROUPS_MAX]
        ],
        merchants_truncated=len(merchant_rows) > MERCHANT_GROUPS_MAX,
    )


async def _report_fields(request: Request, period: ReportPeriod) -> dict[str, Any]:
    groups = await _groups(request.app.state.context.pool, period)
    return {
        "starts_at": period.starts_at,
        "ends_at": period.ends_at,
        "generated_at": request.app.state.context.clock.now(),
        "totals": groups.totals,
        "channels": groups.channels,
        "merchants": groups.merchants,
        "merchants_truncated": groups.merchants_truncated,
    }


@router.get("/daily", response_model=DailyReportView)
async def daily_report(request: Request, day: ReportDay) -> Any:
    """Payments created on one UTC day (by the payment's `created_at`), per channel, per
    merchant and for the platform, each per currency.

    An invalid `date` (format, or a day the calendar lacks) is a 422 `invalid_request`.
    """
    period = day_period(day)
    return DailyReportView(date=period.starts_at.date(), **await _report_fields(request, period))


@router.get("/monthly", response_model=MonthlyReportView)
async def monthly_report(request: Request, month: ReportMonth) -> Any:
    """Payments created in one UTC calendar month (by the payment's `created_at`), per
    channel, per merchant and for the platform, each per currency.

    An invalid `month` (format, or a month outside 01-12) is a 422 `invalid_request`.
    """
    period = month_period(month)
    return MonthlyReportView(month=month, **await _report_fields(request, period))
