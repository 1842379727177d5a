"""Every rule of services/risk/domain.py on its edges.

Limits are inclusive: a payment that reaches a limit exactly passes, one minor unit (or one
payment) more fires. The history never includes the payment being decided, so counts are
"before + 1" and amounts "before + this amount". Windows end at the payment's own time and
an earlier payment counts while it is less than `window_seconds` old. Days are UTC days.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.payments import Payer
from schemas.risk import (
    CurrencyLimits,
    PayerKey,
    RiskDecisionMadePayload,
    RiskOutcome,
    RiskRules,
    VelocityRule,
    upcast_rules_v1_v2,
)
from services.risk.domain import (
    ANOMALY_RULE,
    KYC_DAILY_AMOUNT_RULE,
    KYC_SINGLE_PAYMENT_RULE,
    MERCHANT_DAILY_AMOUNT_RULE,
    MERCHANT_DAILY_COUNT_RULE,
    PAYER_DAILY_AMOUNT_RULE,
    PAYER_DAILY_COUNT_RULE,
    SINGLE_PAYMENT_LIMIT_RULE,
    PaymentFacts,
    RiskHistory,
    blocklist_rule_id,
    count_in_window,
    evaluate,
    payer_keys,
    robust_score,
    utc_day,
    velocity_rule_id,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SINGLE_LIMIT = 10_000
PAYER = Payer(id="payer-1", ip="203.0.113.7", device_id="dev-1", card_fingerprint="fp-1")
KEY_FIELDS = {
    PayerKey.PAYER: "id",
    PayerKey.IP: "ip",
    PayerKey.DEVICE: "device_id",
    PayerKey.CARD_FINGERPRINT: "card_fingerprint",
}
# Around 1 000 with a median of 1 000 and a MAD of 10; the spread is 1.4826 * 10.
TYPICAL = (980, 990, 1_000, 1_010, 1_020)
SPREAD = 1.4826 * 10


def rules(**fields: object) -> RiskRules:
    """Rules with everything but the named fields switched off (validated, not copied).

    Amount limits are named as the single numbers of v1 rules and read as the service
    reads stored v1 rules (`upcast_rules_v1_v2`): the same limits in each currency that
    existed then, CNY among them."""
    off: dict[str, object] = {
        "payer_daily_amount_limit_minor": None,
        "payer_daily_count_limit": None,
        "velocity": (),
    }
    return RiskRules.model_validate(upcast_rules_v1_v2({**off, **fields}))


def without(key: PayerKey) -> Payer:
    """PAYER with one key missing."""
    return PAYER.model_copy(update={KEY_FIELDS[key]: None})


def decide(
    amount: int = 1_000,
    rule_set: RiskRules | None = None,
    history: RiskHistory | None = None,
    payer: Payer | None = PAYER,
    single_limit: int = SINGLE_LIMIT,
) -> RiskDecisionMadePayload:
    facts = PaymentFacts(
        payment_id="pay_1", amount_minor=amount, currency="CNY", payer=payer, occurred_at=NOW
    )
    decision = evaluate(facts, rule_set or rules(), single_limit, history or RiskHistory())
    assert decision.payment_id == "pay_1"
    # The outcome and score always agree with what fired.
    if decision.outcome is RiskOutcome.DENY:
        assert decision.score == 100
        assert decision.fired_rules
        assert all(rule.rule_id != ANOMALY_RULE for rule in decision.fired_rules)
    elif decision.outcome is RiskOutcome.REVIEW:
        assert 50 <= decision.score <= 99
        assert [rule.rule_id for rule in decision.fired_rules] == [ANOMALY_RULE]
    else:
        assert 0 <= decision.score <= 49
        assert decision.fired_rules == ()
    assert all(rule.reason for rule in decision.fired_rules)
    return decision


def fired(decision: RiskDecisionMadePayload) -> list[str]:
    return [rule.rule_id for rule in decision.fired_rules]


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


# -- single payment limit ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(SINGLE_LIMIT - 1, []), (SINGLE_LIMIT, []), (SINGLE_LIMIT + 1, [SINGLE_PAYMENT_LIMIT_RULE])],
)
def test_single_payment_limit(amount: int, expected: list[str]) -> None:
    assert fired(decide(amount)) == expected
    # It is the platform's limit: it applies to anonymous payments too.
    assert fired(decide(amount, payer=None)) == expected


# -- daily limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "expected"),
    [(8_999, []), (9_000, []), (9_001, [PAYER_DAILY_AMOUNT_RULE])],
)
def test_payer_daily_amount_limit(before: int, expected: list[str]) -> None:
    limits = rules(payer_daily_amount_limit_minor=10_000)
    history = RiskHistory(payer_day_amount_minor=before)
    assert fired(decide(1_000, limits, history)) == expected


@pytest.mark.parametrize(("before", "expected"), [(3, []), (4, []), (5, [PAYER_DAILY_COUNT_RULE])])
def test_payer_daily_count_limit(before: int, expected: list[str]) -> None:
    limits = rules(payer_daily_count_limit=5)
    assert fired(decide(rule_set=limits, history=RiskHistory(payer_day_count=before))) == expected


@pytest.mark.parametrize(
    "payer",
    [None, Payer(), without(PayerKey.PAYER)],
    ids=["no payer", "empty payer", "payer without id"],
)
def test_payer_daily_limits_need_a_payer_id(payer: Payer | None) -> None:
    limits = rules(payer_daily_amount_limit_minor=1, payer_daily_count_limit=1)
    history = RiskHistory(payer_day_amount_minor=10**9, payer_day_count=10**6)
    assert decide(1_000, limits, history, payer=payer).outcome is RiskOutcome.APPROVE
    # The same history with a payer id fires both.
    assert set(fired(decide(1_000, limits, history))) == {
        PAYER_DAILY_AMOUNT_RULE,
        PAYER_DAILY_COUNT_RULE,
    }


@pytest.mark.parametrize(
    ("before", "expected"),
    [(8_999, []), (9_000, []), (9_001, [MERCHANT_DAILY_AMOUNT_RULE])],
)
@pytest.mark.parametrize("payer", [PAYER, None], ids=["payer", "anonymous"])
def test_merchant_daily_amount_limit(before: int, expected: list[str], payer: Payer | None) -> None:
    limits = rules(merchant_daily_amount_limit_minor=10_000)
    history = RiskHistory(merchant_day_amount_minor=before)
    assert fired(decide(1_000, limits, history, payer=payer)) == expected


@pytest.mark.parametrize(
    ("before", "expected"), [(8, []), (9, []), (10, [MERCHANT_DAILY_COUNT_RULE])]
)
@pytest.mark.parametrize("payer", [PAYER, None], ids=["payer", "anonymous"])
def test_merchant_daily_count_limit(before: int, expected: list[str], payer: Payer | None) -> None:
    limits = rules(merchant_daily_count_limit=10)
    history = RiskHistory(merchant_day_count=before)
    assert fired(decide(rule_set=limits, history=history, payer=payer)) == expected


@pytest.mark.parametrize(
    "field",
    [
        "payer_daily_amount_limit_minor",
        "payer_daily_count_limit",
        "merchant_daily_amount_limit_minor",
        "merchant_daily_count_limit",
        "unverified_single_payment_limit_minor",
        "unverified_daily_amount_limit_minor",
    ],
)
def test_a_null_limit_is_off(field: str) -> None:
    every_limit = {
        "payer_daily_amount_limit_minor": 1,
        "payer_daily_count_limit": 1,
        "merchant_daily_amount_limit_minor": 1,
        "merchant_daily_count_limit": 1,
        "unverified_single_payment_limit_minor": 1,
        "unverified_daily_amount_limit_minor": 1,
        "kyc_verified": False,
    }
    history = RiskHistory(
        payer_day_amount_minor=10**9,
        payer_day_count=10**6,
        merchant_day_amount_minor=10**9,
        merchant_day_count=10**6,
    )
    with_limit = fired(decide(1_000, rules(**every_limit), history))
    without_limit = fired(decide(1_000, rules(**{**every_limit, field: None}), history))
    assert len(with_limit) == 6
    assert len(without_limit) == 5
    assert set(with_limit) - set(without_limit) == {
        {
            "payer_daily_amount_limit_minor": PAYER_DAILY_AMOUNT_RULE,
            "payer_daily_count_limit": PAYER_DAILY_COUNT_RULE,
            "merchant_daily_amount_limit_minor": MERCHANT_DAILY_AMOUNT_RULE,
            "merchant_daily_count_limit": MERCHANT_DAILY_COUNT_RULE,
            "unverified_single_payment_limit_minor": KYC_SINGLE_PAYMENT_RULE,
            "unverified_daily_amount_limit_minor": KYC_DAILY_AMOUNT_RULE,
        }[field]
    }


def test_every_limit_off_approves_anything_under_the_single_limit() -> None:
    everything_off = RiskRules(
        amount_limits={"CNY": CurrencyLimits()},
        payer_daily_count_limit=None,
        merchant_daily_count_limit=None,
        velocity=(),
        kyc_verified=False,
    )
    history = RiskHistory(
        payer_day_amount_minor=10**12,
        payer_day_count=10**6,
        merchant_day_amount_minor=10**12,
        merchant_day_count=10**6,
    )
    decision = decide(SINGLE_LIMIT, everything_off, history)
    assert decision.outcome is RiskOutcome.APPROVE
    assert decision.score == 0


# -- velocity ----------------------------------------------------------------------------

VELOCITY_MAX = 3


@pytest.mark.parametrize("key", list(PayerKey))
@pytest.mark.parametrize(
    ("earlier", "fires"),
    [(VELOCITY_MAX - 2, False), (VELOCITY_MAX - 1, False), (VELOCITY_MAX, True)],
    ids=["makes max-1", "makes max", "makes max+1"],
)
def test_velocity_per_key(key: PayerKey, earlier: int, fires: bool) -> None:
    every_key = tuple(
        VelocityRule(key=each, window_seconds=60, max_count=VELOCITY_MAX) for each in PayerKey
    )
    # Earlier payments with this key's value only; the other keys have none.
    history = RiskHistory(velocity_times={key: [ago(n + 1) for n in range(earlier)]})
    decision = decide(rule_set=rules(velocity=every_key), history=history)
    assert fired(decision) == ([f"velocity.{key.value}.60s"] if fires else [])
    if fires:
        assert decision.fired_rules[0].reason.startswith(f"{VELOCITY_MAX + 1} payments")


@pytest.mark.parametrize("key", list(PayerKey))
def test_velocity_only_checks_keys_the_payer_has(key: PayerKey) -> None:
    strict = rules(velocity=(VelocityRule(key=key, window_seconds=60, max_count=1),))
    history = RiskHistory(velocity_times={each: [ago(1)] * 5 for each in PayerKey})
    assert fired(decide(rule_set=strict, history=history)) == [f"velocity.{key.value}.60s"]
    assert fired(decide(rule_set=strict, history=history, payer=without(key))) == []
    assert fired(decide(rule_set=strict, history=history, payer=None)) == []


@pytest.mark.parametrize(
    ("rule", "rule_id"),
    [
        (VelocityRule(key=PayerKey.PAYER, window_seconds=60, max_count=10), "velocity.payer.60s"),
        (VelocityRule(key=PayerKey.IP, window_seconds=3_600, max_count=30), "velocity.ip.3600s"),
        (VelocityRule(key=PayerKey.DEVICE, window_seconds=1, max_count=1), "velocity.device.1s"),
        (
            VelocityRule(key=PayerKey.CARD_FINGERPRINT, window_seconds=604_800, max_count=1),
            "velocity.card_fingerprint.604800s",
        ),
    ],
)
def test_velocity_rule_id_names_the_window(rule: VelocityRule, rule_id: str) -> None:
    assert velocity_rule_id(rule) == rule_id


def test_two_windows_on_one_key_fire_separately() -> None:
    minute = VelocityRule(key=PayerKey.PAYER, window_seconds=60, max_count=2)
    hour = VelocityRule(key=PayerKey.PAYER, window_seconds=3_600, max_count=5)
    two_recent = RiskHistory(velocity_times={PayerKey.PAYER: [ago(10), ago(20)]})
    spread_out = RiskHistory(velocity_times={PayerKey.PAYER: [ago(120 * n) for n in range(1, 6)]})
    both = RiskHistory(velocity_times={PayerKey.PAYER: [ago(n) for n in range(1, 6)]})
    limits = rules(velocity=(minute, hour))
    assert fired(decide(rule_set=limits, history=two_recent)) == ["velocity.payer.60s"]
    assert fired(decide(rule_set=limits, history=spread_out)) == ["velocity.payer.3600s"]
    assert fired(decide(rule_set=limits, history=both)) == [
        "velocity.payer.60s",
        "velocity.payer.3600s",
    ]


MICROSECOND = timedelta(microseconds=1)
WINDOW = timedelta(seconds=60)


@pytest.mark.parametrize(
    ("moment", "counted"),
    [
        (NOW - WINDOW - MICROSECOND, False),
        (NOW - WINDOW, False),
        (NOW - WINDOW + MICROSECOND, True),
        (NOW - MICROSECOND, True),
        (NOW, True),
        (NOW + MICROSECOND, False),
        (NOW + WINDOW, False),
    ],
    ids=[
        "older than window",
        "exactly window old",
        "1us younger than window",
        "1us ago",
        "same instant",
        "1us in the future",
        "a window in the future",
    ],
)
def test_count_in_window_boundaries(moment: datetime, counted: bool) -> None:
    assert count_in_window([moment], NOW, 60) == int(counted)
    # Through evaluate: with max_count 1, a counted earlier payment makes this one fire.
    one_per_minute = rules(
        velocity=(VelocityRule(key=PayerKey.DEVICE, window_seconds=60, max_count=1),)
    )
    history = RiskHistory(velocity_times={PayerKey.DEVICE: [moment]})
    assert fired(decide(rule_set=one_per_minute, history=history)) == (
        ["velocity.device.60s"] if counted else []
    )


def test_count_in_window_counts_each_time() -> None:
    times = [ago(0), ago(1), ago(1), ago(59.999999), ago(60), ago(61), NOW + MICROSECOND]
    assert count_in_window(times, NOW, 60) == 4
    assert count_in_window([], NOW, 60) == 0


def test_count_in_window_compares_instants_across_time_zones() -> None:
    plus_eight = timezone(timedelta(hours=8))
    assert count_in_window([ago(30).astimezone(plus_eight)], NOW, 60) == 1
    assert count_in_window([ago(60).astimezone(plus_eight)], NOW, 60) == 0


# -- block list --------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(PayerKey))
def test_block_list_denies_each_key(key: PayerKey) -> None:
    history = RiskHistory(blocked=frozenset({key}))
    decision = decide(history=history)
    assert decision.outcome is RiskOutcome.DENY
    assert fired(decision) == [blocklist_rule_id(key)] == [f"blocklist.{key.value}"]
    assert payer_keys(PAYER)[key] in decision.fired_rules[0].reason
    # A block on a key the payer did not send does not apply.
    assert decide(history=history, payer=without(key)).outcome is RiskOutcome.APPROVE
    assert decide(history=history, payer=None).outcome is RiskOutcome.APPROVE


def test_block_list_fires_once_per_blocked_key() -> None:
    history = RiskHistory(blocked=frozenset({PayerKey.IP, PayerKey.CARD_FINGERPRINT}))
    assert sorted(fired(decide(history=history))) == [
        "blocklist.card_fingerprint",
        "blocklist.ip",
    ]
    assert fired(decide(history=history, payer=without(PayerKey.IP))) == [
        "blocklist.card_fingerprint"
    ]


@pytest.mark.parametrize(
    ("payer", "keys"),
    [
        (None, {}),
        (Payer(), {}),
        (Payer(ip="2001:db8::1"), {PayerKey.IP: "2001:db8::1"}),
        (Payer(id="p", device_id="d"), {PayerKey.PAYER: "p", PayerKey.DEVICE: "d"}),
        (
            PAYER,
            {
                PayerKey.PAYER: "payer-1",
                PayerKey.IP: "203.0.113.7",
                PayerKey.DEVICE: "dev-1",
                PayerKey.CARD_FINGERPRINT: "fp-1",
            },
        ),
    ],
)
def test_payer_keys(payer: Payer | None, keys: dict[PayerKey, str]) -> None:
    assert payer_keys(payer) == keys


# -- unverified merchant -----------------------------------------------------------------

UNVERIFIED_SINGLE = 50_000
UNVERIFIED_DAILY = 200_000


def kyc_rules(verified: bool) -> RiskRules:
    return rules(
        kyc_verified=verified,
        unverified_single_payment_limit_minor=UNVERIFIED_SINGLE,
        unverified_daily_amount_limit_minor=UNVERIFIED_DAILY,
    )


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (UNVERIFIED_SINGLE - 1, []),
        (UNVERIFIED_SINGLE, []),
        (UNVERIFIED_SINGLE + 1, [KYC_SINGLE_PAYMENT_RULE]),
    ],
)
def test_unverified_single_payment_limit(amount: int, expected: list[str]) -> None:
    assert fired(decide(amount, kyc_rules(False), single_limit=10**9)) == expected
    assert fired(decide(amount, kyc_rules(True), single_limit=10**9)) == []


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (UNVERIFIED_DAILY - 10_001, []),
        (UNVERIFIED_DAILY - 10_000, []),
        (UNVERIFIED_DAILY - 9_999, [KYC_DAILY_AMOUNT_RULE]),
    ],
)
def test_unverified_daily_amount_limit(before: int, expected: list[str]) -> None:
    history = RiskHistory(merchant_day_amount_minor=before)
    assert fired(decide(10_000, kyc_rules(False), history)) == expected
    assert fired(decide(10_000, kyc_rules(False), history, payer=None)) == expected
    assert fired(decide(10_000, kyc_rules(True), history)) == []


def test_unverified_limits_apply_by_default_until_verified() -> None:
    defaults = RiskRules(kyc_verified=False)
    assert fired(decide(50_001, defaults, single_limit=10**9)) == [KYC_SINGLE_PAYMENT_RULE]
    assert fired(decide(50_001, RiskRules(), single_limit=10**9)) == []


# -- anomaly -----------------------------------------------------------------------------


def anomaly_rules(score: float | None = 8.0, history_min: int = len(TYPICAL)) -> RiskRules:
    return rules(anomaly_review_score=score, anomaly_history_min=history_min)


def test_anomaly_is_off_without_a_review_score() -> None:
    decision = decide(
        1_000_000, anomaly_rules(None), RiskHistory(recent_amounts=TYPICAL), single_limit=10**9
    )
    assert decision.outcome is RiskOutcome.APPROVE
    assert decision.score == 0


@pytest.mark.parametrize(
    ("recent", "outcome"),
    [(TYPICAL[:-1], RiskOutcome.APPROVE), (TYPICAL, RiskOutcome.REVIEW)],
    ids=["min-1 amounts", "min amounts"],
)
def test_anomaly_needs_history_min_amounts(recent: tuple[int, ...], outcome: RiskOutcome) -> None:
    decision = decide(5_000, anomaly_rules(), RiskHistory(recent_amounts=recent))
    assert decision.outcome is outcome
    if outcome is RiskOutcome.APPROVE:
        assert decision.score == 0


@pytest.mark.parametrize(
    ("amount", "outcome", "score"),
    [
        (1_000, RiskOutcome.APPROVE, 0),
        (1_050, RiskOutcome.APPROVE, int(50 / SPREAD * 49 / 8)),
        (950, RiskOutcome.APPROVE, int(50 / SPREAD * 49 / 8)),
        (1_118, RiskOutcome.APPROVE, 48),  # robust score 7.96, just under 8
        (1_119, RiskOutcome.REVIEW, 58),  # robust score 8.03, just over 8
        (881, RiskOutcome.REVIEW, 58),
        (5_000, RiskOutcome.REVIEW, 99),  # robust score 270, capped at 99
    ],
)
def test_anomaly_scores_the_amount(amount: int, outcome: RiskOutcome, score: int) -> None:
    decision = decide(amount, anomaly_rules(), RiskHistory(recent_amounts=TYPICAL))
    assert (decision.outcome, decision.score) == (outcome, score)
    if outcome is RiskOutcome.REVIEW:
        assert fired(decision) == [ANOMALY_RULE]
        assert "median 1000" in decision.fired_rules[0].reason


def test_robust_score_is_distance_from_the_median_in_robust_sigmas() -> None:
    assert robust_score(1_000, TYPICAL) == 0
    assert robust_score(1_000 + 10, TYPICAL) == pytest.approx(10 / SPREAD)
    assert robust_score(1_000 - 10, TYPICAL) == pytest.approx(10 / SPREAD)


@pytest.mark.parametrize(
    ("recent", "amount", "expected"),
    [
        ((1_000,) * 20, 1_000, 0.0),
        ((1_000,) * 20, 1_001, 1 / (1.4826 * 10)),  # spread floored at 1 % of the median
        ((1_000,) * 20, 2_000, 1_000 / (1.4826 * 10)),
        ((50,) * 20, 51, 1 / 1.4826),  # and at one minor unit
        ((1,) * 20, 2, 1 / 1.4826),
    ],
)
def test_identical_history_gives_a_finite_score(
    recent: tuple[int, ...], amount: int, expected: float
) -> None:
    score = robust_score(amount, recent)
    assert math.isfinite(score)
    assert score == pytest.approx(expected)


def test_identical_history_still_reviews_a_different_amount() -> None:
    history = RiskHistory(recent_amounts=(1_000,) * 20)
    assert decide(1_000, anomaly_rules(history_min=20), history).outcome is RiskOutcome.APPROVE
    decision = decide(2_000, anomaly_rules(history_min=20), history)
    assert decision.outcome is RiskOutcome.REVIEW
    assert decision.score == 99


def test_one_huge_outlier_in_the_history_changes_nothing() -> None:
    """Median and MAD ignore one wild amount; a mean and standard deviation would be
    dragged by it so far that real outliers would pass unnoticed."""
    recent = (*TYPICAL * 4, 9_000_000)
    history = RiskHistory(recent_amounts=recent)
    limits = anomaly_rules(history_min=20)
    normal = decide(1_000, limits, history)
    assert (normal.outcome, normal.score) == (RiskOutcome.APPROVE, 0)
    assert decide(5_000, limits, history).outcome is RiskOutcome.REVIEW
    # What a mean-based score would have said about 5 000: nothing unusual.
    assert abs(5_000 - statistics.mean(recent)) / statistics.pstdev(recent) < 1


@settings(max_examples=200, deadline=None)
@given(
    recent=st.lists(st.integers(100, 10**9), min_size=3, max_size=41).filter(
        lambda amounts: len(amounts) % 2 == 1
    ),
    offset=st.integers(0, 10**9),
    scale=st.integers(1, 1_000),
)
def test_robust_score_is_symmetric_and_scale_free(
    recent: list[int], offset: int, scale: int
) -> None:
    median = int(statistics.median(recent))  # odd length: one of the amounts
    above = robust_score(median + offset, recent)
    assert math.isfinite(above)
    assert above >= 0
    # As far below the median scores the same as above it.
    assert robust_score(median - offset, recent) == pytest.approx(above, rel=1e-9)
    # Amounts of at least 100 keep the one-minor-unit floor out of play: scaling every
    # amount by the same factor leaves the score alone.
    scaled = robust_score((median + offset) * scale, [amount * scale for amount in recent])
    assert scaled == pytest.approx(above, rel=1e-9)


# -- several rules together --------------------------------------------------------------


def test_a_deny_wins_over_review() -> None:
    limits = anomaly_rules()
    history = RiskHistory(recent_amounts=TYPICAL, blocked=frozenset({PayerKey.DEVICE}))
    assert decide(5_000, limits, RiskHistory(recent_amounts=TYPICAL)).outcome is RiskOutcome.REVIEW
    decision = decide(5_000, limits, history)
    assert decision.outcome is RiskOutcome.DENY
    assert decision.score == 100
    assert fired(decision) == ["blocklist.device"]


def test_every_deny_rule_that_fires_is_reported() -> None:
    limits = rules(
        payer_daily_amount_limit_minor=10_000,
        payer_daily_count_limit=5,
        merchant_daily_amount_limit_minor=10_000,
        merchant_daily_count_limit=10,
        velocity=(VelocityRule(key=PayerKey.IP, window_seconds=60, max_count=1),),
        kyc_verified=False,
        unverified_single_payment_limit_minor=5_000,
        unverified_daily_amount_limit_minor=10_000,
        anomaly_review_score=8.0,
        anomaly_history_min=5,
    )
    history = RiskHistory(
        payer_day_amount_minor=9_000,
        payer_day_count=5,
        merchant_day_amount_minor=9_000,
        merchant_day_count=10,
        velocity_times={PayerKey.IP: [ago(1)]},
        recent_amounts=TYPICAL,
        blocked=frozenset(PayerKey),
    )
    decision = decide(SINGLE_LIMIT + 1, limits, history)
    assert decision.outcome is RiskOutcome.DENY
    assert sorted(fired(decision)) == sorted(
        [
            "blocklist.payer",
            "blocklist.ip",
            "blocklist.device",
            "blocklist.card_fingerprint",
            SINGLE_PAYMENT_LIMIT_RULE,
            PAYER_DAILY_AMOUNT_RULE,
            PAYER_DAILY_COUNT_RULE,
            MERCHANT_DAILY_AMOUNT_RULE,
            MERCHANT_DAILY_COUNT_RULE,
            KYC_SINGLE_PAYMENT_RULE,
            KYC_DAILY_AMOUNT_RULE,
            "velocity.ip.60s",
        ]
    )
    assert len(set(fired(decision))) == len(fired(decision))


# -- UTC days ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2026, 11, 22, 1, 0, tzinfo=timezone(timedelta(hours=8))), 21),
        (datetime(2026, 11, 22, 8, 0, tzinfo=timezone(timedelta(hours=8))), 22),
        (datetime(2026, 11, 21, 20, 0, tzinfo=timezone(timedelta(hours=-5))), 22),
        (datetime(2026, 11, 22, 0, 0, tzinfo=UTC), 22),
        (datetime(2026, 11, 22, 23, 59, 59, 999_999, tzinfo=UTC), 22),
        (datetime(2026, 11, 23, 0, 0, tzinfo=UTC), 23),
    ],
    ids=["01:00+08", "08:00+08", "20:00-05", "midnight", "last microsecond", "next midnight"],
)
def test_utc_day(moment: datetime, day: int) -> None:
    start, end = utc_day(moment)
    assert start == datetime(2026, 11, day, tzinfo=UTC)
    assert start.utcoffset() == timedelta(0)
    assert end - start == timedelta(days=1)
    assert start <= moment < end


def test_utc_day_across_a_month_and_year_end() -> None:
    start, end = utc_day(datetime(2027, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=9))))
    assert (start, end) == (datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


# -- regressions ---------------------------------------------------------------------------


# A valid payer value of 128 unprintable characters once made the reason (which quoted
# the whole value) longer than FiredRule allows, so `evaluate` raised instead of denying.
@pytest.mark.parametrize("value", ["\x01" * 128, "\u200b" * 128], ids=["control", "zero-width"])
@pytest.mark.parametrize("rule", ["blocklist", "velocity"])
def test_an_unprintable_payer_value_is_still_denied(value: str, rule: str) -> None:
    payer = Payer(id=value, device_id=value)
    if rule == "blocklist":
        limits, history = rules(), RiskHistory(blocked=frozenset({PayerKey.PAYER}))
    else:
        limits = rules(
            velocity=(VelocityRule(key=PayerKey.DEVICE, window_seconds=60, max_count=1),)
        )
        history = RiskHistory(velocity_times={PayerKey.DEVICE: [ago(1)]})
    assert decide(rule_set=limits, history=history, payer=payer).outcome is RiskOutcome.DENY
