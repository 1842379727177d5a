"""Operations reports: UTC periods on their edges, the success rate's rounding, the fee of
a journal entry, and invalid periods refused as problems before any database is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from schemas.ledger import Posting
from services.gateway.app import create_app
from services.gateway.reports import (
    NOT_SUCCEEDED_STATUSES,
    InvalidReportPeriod,
    ReportPeriod,
    day_period,
    month_period,
    payment_fee_minor,
    success_rate,
)
from services.gateway.settings import GatewaySettings

ADMIN_KEY = "ak_unit_test_admin_key"


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("2026-11-22", ReportPeriod(utc(2026, 11, 22), utc(2026, 11, 23))),
        ("2024-02-29", ReportPeriod(utc(2024, 2, 29), utc(2024, 3, 1))),
        ("2025-12-31", ReportPeriod(utc(2025, 12, 31), utc(2026, 1, 1))),
        ("0001-01-01", ReportPeriod(utc(1, 1, 1), utc(1, 1, 2))),
    ],
)
def test_a_day_is_the_utc_midnight_to_midnight_interval(text: str, period: ReportPeriod) -> None:
    assert day_period(text) == period


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("2026-11", ReportPeriod(utc(2026, 11, 1), utc(2026, 12, 1))),
        ("2025-12", ReportPeriod(utc(2025, 12, 1), utc(2026, 1, 1))),
        ("2026-01", ReportPeriod(utc(2026, 1, 1), utc(2026, 2, 1))),
        ("2024-02", ReportPeriod(utc(2024, 2, 1), utc(2024, 3, 1))),
        ("9999-11", ReportPeriod(utc(9999, 11, 1), utc(9999, 12, 1))),
    ],
)
def test_a_month_runs_from_its_first_day_to_the_next_months(
    text: str, period: ReportPeriod
) -> None:
    assert month_period(text) == period


def test_leap_years_give_february_its_29th_day() -> None:
    leap, common = month_period("2024-02"), month_period("2025-02")
    assert (leap.ends_at - leap.starts_at).days == 29
    assert (common.ends_at - common.starts_at).days == 28


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2025-02-29",
        "2026-04-31",
        "2026-13-01",
        "2026-00-10",
        "2026-1-05",
        "20260105",
        "2026-01-05T00:00:00",
        " 2026-01-05",
        "2026/01/05",
        "１２３４-01-05",  # full-width digits  # noqa: RUF001
        "9999-12-31",  # its end would be in year 10000
        "2026-11",
    ],
)
def test_an_invalid_day_is_refused(text: str) -> None:
    with pytest.raises(InvalidReportPeriod) as refused:
        day_period(text)
    assert refused.value.code == "invalid_request"


@pytest.mark.parametrize(
    "text",
    ["", "2026-13", "2026-00", "2026-1", "26-11", "0000-01", "9999-12", "2026-11-01", "2026_11"],
)
def test_an_invalid_month_is_refused(text: str) -> None:
    with pytest.raises(InvalidReportPeriod):
        month_period(text)


@pytest.mark.parametrize(
    ("succeeded", "not_succeeded", "rate"),
    [
        (0, 0, None),
        (0, 3, 0.0),
        (2, 0, 1.0),
        (2, 1, 0.6667),
        (1, 2, 0.3333),
        (3, 2, 0.6),
        # 1/32 = 0.03125 and 3/32 = 0.09375: ties at the 5th decimal go to the even digit.
        (1, 31, 0.0312),
        (3, 29, 0.0938),
    ],
)
def test_the_success_rate_has_four_decimals_rounded_half_to_even(
    succeeded: int, not_succeeded: int, rate: float | None
) -> None:
    assert success_rate(succeeded, not_succeeded) == rate


def test_failed_canceled_and_expired_payments_count_as_not_succeeded() -> None:
    assert NOT_SUCCEEDED_STATUSES == ("canceled", "expired", "failed")


def posting(account_id: str, amount_minor: int) -> Posting:
    return Posting(account_id=account_id, currency="CNY", amount_minor=amount_minor)


def test_the_fee_is_the_negated_credit_on_fee_revenue() -> None:
    postings = [
        posting("platform:channel_receivable:card", 1_500),
        posting("merchant:mch_1:pending", -1_426),
        posting("platform:fee_revenue", -74),
    ]
    assert payment_fee_minor(postings) == 74


def test_an_entry_without_a_fee_line_charged_no_fee() -> None:
    postings = [
        posting("platform:channel_receivable:alipay", 1_000),
        posting("merchant:mch_1:pending", -1_000),
    ]
    assert payment_fee_minor(postings) == 0


@pytest.fixture
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's HTTP app without its lifespan: nothing connects, so only requests
    refused before any database read can be answered."""
    app = create_app(GatewaySettings(admin_key=ADMIN_KEY, log_format="console"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def as_admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/v1/admin/reports/daily", {"date": "2025-02-29"}, "query.date"),
        ("/v1/admin/reports/daily", {"date": "2026-1-5"}, "query.date"),
        ("/v1/admin/reports/daily", {"date": "2026-11"}, "query.date"),
        ("/v1/admin/reports/daily", {}, "query.date"),
        ("/v1/admin/reports/monthly", {"month": "2026-13"}, "query.month"),
        ("/v1/admin/reports/monthly", {"month": "2026-11-01"}, "query.month"),
        ("/v1/admin/reports/monthly", {}, "query.month"),
    ],
)
async def test_an_invalid_period_is_a_422_problem_with_a_stable_code(
    gateway: httpx.AsyncClient, path: str, query: dict[str, str], field: str
) -> None:
    answer = await gateway.get(path, params=query, headers=as_admin())
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert (problem["code"], problem["status"]) == ("invalid_request", 422)
    assert [error["field"] for error in problem["errors"]] == [field]


async def test_the_admin_key_is_checked_before_the_period(gateway: httpx.AsyncClient) -> None:
    path = "/v1/admin/reports/daily?date=not-a-day"
    anonymous = await gateway.get(path)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "authentication_required")
    wrong = await gateway.get(path, headers={"Authorization": "Bearer sk_test_merchant"})
    assert (wrong.status_code, wrong.json()["code"]) == (403, "admin_key_required")
