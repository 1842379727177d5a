"""T+N settlement rules with a cutoff in the merchant's time zone, on their edges."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from schemas.merchants import SettlementTerms
from services.common.invariant import InvariantViolation
from services.ledger.settlement import (
    business_day,
    is_due,
    settlement_day,
    settlement_entry,
)

SHANGHAI_T1 = SettlementTerms(delay_days=1, cutoff_time="18:00", time_zone="Asia/Shanghai")


@pytest.mark.parametrize(
    ("occurred_at", "day"),
    [
        # 17:59:59 in Shanghai (UTC+8) is before the cutoff: that day.
        (datetime(2026, 11, 22, 9, 59, 59, tzinfo=UTC), date(2026, 11, 22)),
        # 18:00:00 local is at the cutoff: the next day.
        (datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC), date(2026, 11, 23)),
        # 01:00 local on the 23rd is 17:00 UTC on the 22nd.
        (datetime(2026, 11, 22, 17, 0, tzinfo=UTC), date(2026, 11, 23)),
    ],
)
def test_the_business_day_follows_the_local_cutoff(occurred_at: datetime, day: date) -> None:
    assert business_day(occurred_at, SHANGHAI_T1) == day


def test_a_midnight_cutoff_means_the_local_calendar_day() -> None:
    terms = SettlementTerms(delay_days=0, cutoff_time="00:00", time_zone="America/New_York")
    # 23:30 on the 21st in New York.
    assert business_day(datetime(2026, 11, 22, 4, 30, tzinfo=UTC), terms) == date(2026, 11, 21)


def test_funds_settle_n_days_after_their_business_day() -> None:
    captured = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)  # 17:00 Shanghai, before cutoff
    assert settlement_day(captured, SHANGHAI_T1) == date(2026, 11, 23)
    assert not is_due(captured, SHANGHAI_T1, date(2026, 11, 22))
    assert is_due(captured, SHANGHAI_T1, date(2026, 11, 23))
    t7 = SHANGHAI_T1.model_copy(update={"delay_days": 7})
    assert settlement_day(captured, t7) == date(2026, 11, 29)
    t0 = SHANGHAI_T1.model_copy(update={"delay_days": 0})
    assert is_due(captured, t0, date(2026, 11, 22))


@pytest.mark.parametrize("net", [1, 9_940, -4_000])
def test_a_settlement_moves_the_net_from_pending_to_available(net: int) -> None:
    postings = settlement_entry("mch_1", "CNY", net)
    assert [(p.account_id, p.amount_minor) for p in postings] == [
        ("merchant:mch_1:pending", net),
        ("merchant:mch_1:available", -net),
    ]


def test_a_zero_net_posts_no_entry() -> None:
    with pytest.raises(InvariantViolation):
        settlement_entry("mch_1", "CNY", 0)
