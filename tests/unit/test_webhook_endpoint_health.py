"""When an endpoint counts as failing, when it is disabled, and which replay ranges pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.domain import (
    REPLAY_RANGE_MAX,
    ReplayRangeInvalid,
    check_replay_range,
    disabled_reason,
    failing_since_after,
    should_disable,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR_MS = 3_600_000


def test_a_first_failure_starts_the_run_and_later_failures_keep_its_start() -> None:
    started = failing_since_after(None, T0, succeeded=False)
    assert started == T0
    assert failing_since_after(started, T0 + timedelta(hours=5), succeeded=False) == T0


def test_a_success_ends_the_run() -> None:
    assert failing_since_after(T0, T0 + timedelta(minutes=1), succeeded=True) is None
    assert failing_since_after(None, T0, succeeded=True) is None


def test_a_failure_recorded_late_but_attempted_earlier_moves_the_start_back() -> None:
    # Attempts run concurrently: the earlier one may be recorded second.
    assert failing_since_after(T0, T0 - timedelta(seconds=3), succeeded=False) == T0 - timedelta(
        seconds=3
    )


@pytest.mark.parametrize(
    ("elapsed", "disabled"),
    [
        (timedelta(0), False),
        (timedelta(hours=1) - timedelta(microseconds=1), False),
        (timedelta(hours=1), True),  # the period is inclusive
        (timedelta(days=10), True),
    ],
)
def test_an_endpoint_is_disabled_once_it_has_failed_for_the_whole_period(
    elapsed: timedelta, disabled: bool
) -> None:
    assert should_disable(T0, T0 + elapsed, HOUR_MS) is disabled


def test_an_endpoint_that_is_not_failing_or_a_zero_period_never_disables() -> None:
    assert should_disable(None, T0 + timedelta(days=30), HOUR_MS) is False
    assert should_disable(T0, T0 + timedelta(days=30), 0) is False


def test_the_reason_says_how_long_and_since_when() -> None:
    reason = disabled_reason(T0, T0 + timedelta(hours=72))
    assert reason == f"every delivery attempt failed for 72.00 hours, since {T0.isoformat()}"


def test_a_replay_range_runs_forward_for_at_most_the_longest_range() -> None:
    check_replay_range(T0, T0 + timedelta(microseconds=1))
    check_replay_range(T0, T0 + REPLAY_RANGE_MAX)
    with pytest.raises(ReplayRangeInvalid, match="at most"):
        check_replay_range(T0, T0 + REPLAY_RANGE_MAX + timedelta(microseconds=1))
    with pytest.raises(ReplayRangeInvalid, match="before"):
        check_replay_range(T0, T0)
    with pytest.raises(ReplayRangeInvalid, match="before"):
        check_replay_range(T0 + timedelta(seconds=1), T0)
    with pytest.raises(ReplayRangeInvalid, match="time zone"):
        check_replay_range(T0.replace(tzinfo=None), T0 + timedelta(hours=1))
    assert ReplayRangeInvalid.code == "invalid_replay_range"
