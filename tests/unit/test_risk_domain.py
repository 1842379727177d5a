"""Risk rules on their edges: limits are inclusive (reaching one passes, one more fires),
windows end at the payment's time, and the anomaly score is robust (median and MAD)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.payments import Payer
from schemas.risk import PayerKey, RiskOutcome, RiskRules, VelocityRule
from services.risk import domain
from services.risk.domain import PaymentFacts, RiskHistory, count_in_window, evaluate

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PAYER = Payer(id="payer-1", ip="203.0.113.7", device_id="dev-1", card_fingerprint="fp-1")
NO_VELOCITY = RiskRules(velocity=())


def cny_limits(rules: RiskRules = NO_VELOCITY, **limits: int | None) -> RiskRules:
    """`rules` with the named amount limits of CNY, the currency of these payments."""
    current = rules.amount_limits["CNY"]
    return rules.model_copy(update={"amount_limits": {"CNY": current.model_copy(update=limits)}})


def facts(amount: int = 1_000, payer: Payer | None = PAYER) -> PaymentFacts:
    return PaymentFacts(
        payment_id="pay_1", amount_minor=amount, currency="CNY", payer=payer, occurred_at=NOW
    )


def fired(
    amount: int = 1_000,
    rules: RiskRules = NO_VELOCITY,
    history: RiskHistory | None = None,
    payer: Payer | None = PAYER,
    single_limit: int = 10_000,
) -> list[str]:
    decision = evaluate(facts(amount, payer), rules, single_limit, history or RiskHistory())
    assert (decision.outcome is RiskOutcome.DENY) == any(
        not rule.rule_id.startswith("anomaly") for rule in decision.fired_rules
    )
    return [rule.rule_id for rule in decision.fired_rules]


@pytest.mark.parametrize(
    ("amount", "rules"), [(9_999, []), (10_000, []), (10_001, ["limit.single_payment_amount"])]
)
def test_the_single_payment_limit(amount: int, rules: list[str]) -> None:
    assert fired(amount) == rules


@pytest.mark.parametrize(
    ("before", "amount", "rules"),
    [(8_999, 1_000, []), (9_000, 1_000, []), (9_001, 1_000, ["limit.payer_daily_amount"])],
)
def test_the_payer_daily_amount(before: int, amount: int, rules: list[str]) -> None:
    limits = cny_limits(payer_daily_amount_limit_minor=10_000)
    history = RiskHistory(payer_day_amount_minor=before)
    assert fired(amount, limits, history) == rules
    # Without a payer id the payer's limits do not apply.
    assert fired(amount, limits, history, payer=Payer(ip="203.0.113.7")) == []


@pytest.mark.parametrize(("before", "rules"), [(3, []), (4, []), (5, ["limit.payer_daily_count"])])
def test_the_payer_daily_count(before: int, rules: list[str]) -> None:
    limits = NO_VELOCITY.model_copy(update={"payer_daily_count_limit": 5})
    assert fired(rules=limits, history=RiskHistory(payer_day_count=before)) == rules


@pytest.mark.parametrize(
    ("amount_before", "count_before", "rules"),
    [
        (9_000, 9, []),
        (9_001, 9, ["limit.merchant_daily_amount"]),
        (0, 10, ["limit.merchant_daily_count"]),
    ],
)
def test_the_merchant_daily_limits(amount_before: int, count_before: int, rules: list[str]) -> None:
    limits = cny_limits(merchant_daily_amount_limit_minor=10_000).model_copy(
        update={"merchant_daily_count_limit": 10}
    )
    history = RiskHistory(merchant_day_amount_minor=amount_before, merchant_day_count=count_before)
    assert fired(rules=limits, history=history) == rules


def test_a_null_limit_is_off() -> None:
    limits = cny_limits(payer_daily_amount_limit_minor=None).model_copy(
        update={"payer_daily_count_limit": None}
    )
    history = RiskHistory(payer_day_amount_minor=10**12, payer_day_count=10**6)
    assert fired(rules=limits, history=history) == []


@pytest.mark.parametrize("key", list(PayerKey))
@pytest.mark.parametrize(("earlier", "fires"), [(1, False), (2, False), (3, True)])
def test_velocity_per_key(key: PayerKey, earlier: int, fires: bool) -> None:
    rules = RiskRules(velocity=(VelocityRule(key=key, window_seconds=60, max_count=3),))
    times = [NOW - timedelta(seconds=10 * n) for n in range(earlier)]
    history = RiskHistory(velocity_times={key: times})
    assert fired(rules=rules, history=history) == ([f"velocity.{key.value}.60s"] if fires else [])


def test_velocity_only_looks_at_keys_the_payer_has() -> None:
    rules = RiskRules(velocity=(VelocityRule(key=PayerKey.DEVICE, window_seconds=60, max_count=1),))
    history = RiskHistory(velocity_times={PayerKey.DEVICE: [NOW]})
    assert fired(rules=rules, history=history, payer=Payer(id="p")) == []


def test_the_window_ends_at_the_payment_and_excludes_its_start() -> None:
    window = 60
    assert count_in_window([NOW - timedelta(seconds=window)], NOW, window) == 0
    assert count_in_window([NOW - timedelta(seconds=window, microseconds=-1)], NOW, window) == 1
    assert count_in_window([NOW], NOW, window) == 1
    assert count_in_window([NOW + timedelta(microseconds=1)], NOW, window) == 0


@pytest.mark.parametrize("key", list(PayerKey))
def test_a_blocked_value_denies(key: PayerKey) -> None:
    assert fired(history=RiskHistory(blocked=frozenset({key}))) == [f"blocklist.{key.value}"]


def test_a_blocked_key_the_payer_does_not_have_is_ignored() -> None:
    history = RiskHistory(blocked=frozenset({PayerKey.CARD_FINGERPRINT}))
    assert fired(history=history, payer=Payer(id="p")) == []


@pytest.mark.parametrize(
    ("amount", "today", "rules"),
    [
        (50_000, 0, []),
        (50_001, 0, ["kyc.single_payment_amount"]),
        (1_000, 199_000, []),
        (1_000, 199_001, ["kyc.daily_amount"]),
    ],
)
def test_unverified_merchants_have_lower_limits(amount: int, today: int, rules: list[str]) -> None:
    unverified = NO_VELOCITY.model_copy(update={"kyc_verified": False})
    history = RiskHistory(merchant_day_amount_minor=today)
    assert fired(amount, unverified, history, single_limit=10**9) == rules
    assert fired(amount, NO_VELOCITY, history, single_limit=10**9) == []


def test_every_deny_rule_that_fires_is_named() -> None:
    limits = NO_VELOCITY.model_copy(update={"payer_daily_count_limit": 1})
    history = RiskHistory(payer_day_count=1, blocked=frozenset({PayerKey.IP}))
    assert fired(20_000, limits, history) == [
        "blocklist.ip",
        "limit.single_payment_amount",
        "limit.payer_daily_count",
    ]


SCORED = NO_VELOCITY.model_copy(update={"anomaly_review_score": 6.0, "anomaly_history_min": 5})
TYPICAL = [1_000, 1_100, 950, 1_050, 1_000]


def test_anomaly_needs_enough_history() -> None:
    short = RiskHistory(recent_amounts=TYPICAL[:4])
    assert evaluate(facts(90_000), SCORED, 10**9, short).outcome is RiskOutcome.APPROVE
    enough = RiskHistory(recent_amounts=TYPICAL)
    held = evaluate(facts(90_000), SCORED, 10**9, enough)
    assert held.outcome is RiskOutcome.REVIEW
    assert [rule.rule_id for rule in held.fired_rules] == ["anomaly.amount"]
    assert 50 <= held.score <= 99


def test_anomaly_scoring_is_off_by_default() -> None:
    history = RiskHistory(recent_amounts=TYPICAL * 10)
    assert evaluate(facts(90_000), NO_VELOCITY, 10**9, history).outcome is RiskOutcome.APPROVE


def test_a_typical_amount_is_approved_with_a_low_score() -> None:
    decision = evaluate(facts(1_020), SCORED, 10**9, RiskHistory(recent_amounts=TYPICAL))
    assert decision.outcome is RiskOutcome.APPROVE
    assert decision.score < 50


def test_one_huge_amount_in_the_history_does_not_make_normal_amounts_look_normal_or_odd() -> None:
    # A mean and standard deviation would be dragged by the outlier; median and MAD are not.
    history = RiskHistory(recent_amounts=[*TYPICAL, 5_000_000])
    assert evaluate(facts(1_020), SCORED, 10**9, history).outcome is RiskOutcome.APPROVE
    assert evaluate(facts(90_000), SCORED, 10**9, history).outcome is RiskOutcome.REVIEW


def test_identical_history_gives_a_finite_score() -> None:
    assert domain.robust_score(1_001, [1_000] * 30) == pytest.approx(1 / (1.4826 * 10))


def test_a_deny_wins_over_review() -> None:
    history = RiskHistory(recent_amounts=TYPICAL, blocked=frozenset({PayerKey.PAYER}))
    decision = evaluate(facts(90_000), SCORED, 10**9, history)
    assert decision.outcome is RiskOutcome.DENY
    assert [rule.rule_id for rule in decision.fired_rules] == ["blocklist.payer"]


def test_a_day_is_the_utc_calendar_day() -> None:
    shanghai = timezone(timedelta(hours=8))
    start, end = domain.utc_day(datetime(2026, 11, 22, 1, 0, tzinfo=shanghai))
    assert (start, end) == (datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC))
