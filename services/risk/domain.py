"""Risk rules as pure functions of a payment, the merchant's rules and what came before.

Every rule has a stable id and says why it fired. Deny rules (block list, limits,
velocity, unverified-merchant limits) fail the payment; the anomaly rule holds it for a
reviewer. Limits are inclusive: a payment that reaches a limit exactly passes, one that
goes past it fires. Windows end at the payment's own time: an earlier payment counts
while it is less than `window_seconds` old. Days are UTC calendar days.

Amount limits are set per currency in minor units of that currency, and amounts are
summed per currency (no conversion: payrail holds no exchange rates); a currency the
merchant's rules do not name is denied. Counts (daily counts, velocity) take a payer's
payments in every currency together. A payer's values are the merchant's own: payer
`user-1` of one merchant is not payer `user-1` of another, so history is counted within
the merchant; only the block list is platform-wide.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.money import CURRENCIES_BEFORE_PER_CURRENCY_SETTINGS
from schemas.payments import Payer
from schemas.risk import (
    CurrencyLimits,
    FiredRule,
    PayerKey,
    RiskDecisionMadePayload,
    RiskOutcome,
    RiskRules,
    VelocityRule,
)

SINGLE_PAYMENT_LIMIT_RULE = "limit.single_payment_amount"
PAYER_DAILY_AMOUNT_RULE = "limit.payer_daily_amount"
PAYER_DAILY_COUNT_RULE = "limit.payer_daily_count"
MERCHANT_DAILY_AMOUNT_RULE = "limit.merchant_daily_amount"
MERCHANT_DAILY_COUNT_RULE = "limit.merchant_daily_count"
KYC_SINGLE_PAYMENT_RULE = "kyc.single_payment_amount"
KYC_DAILY_AMOUNT_RULE = "kyc.daily_amount"
CURRENCY_NOT_CONFIGURED_RULE = "limit.currency_not_configured"
ANOMALY_RULE = "anomaly.amount"
MANUAL_REVIEW_RULE = "review.manual"

# 1.4826 * MAD estimates the standard deviation of normally distributed amounts.
MAD_TO_SIGMA = 1.4826
# With identical recent amounts the MAD is 0; the spread is floored at 1 % of the median
# (at least one minor unit) so a different amount gets a large, finite score.
MAD_FLOOR_FRACTION = 0.01


# A payer's value is merchant input (any 1 to 128 characters): a reason shows at most
# this much of it, so every reason fits FiredRule's limit whatever the value holds.
SHOWN_VALUE_LENGTH_MAX = 40


def shown(value: str) -> str:
    """`value` as a reason quotes it: repr (unprintable characters escaped), cut short."""
    text = repr(value)
    if len(text) <= SHOWN_VALUE_LENGTH_MAX:
        return text
    return text[: SHOWN_VALUE_LENGTH_MAX - 3] + "..."


def blocklist_rule_id(key: PayerKey) -> str:
    return f"blocklist.{key.value}"


def velocity_rule_id(rule: VelocityRule) -> str:
    return f"velocity.{rule.key.value}.{rule.window_seconds}s"


def payer_keys(payer: Payer | None) -> dict[PayerKey, str]:
    """The payer's identifying values the rules look at (only those the merchant sent)."""
    if payer is None:
        return {}
    values = {
        PayerKey.PAYER: payer.id,
        PayerKey.IP: payer.ip,
        PayerKey.DEVICE: payer.device_id,
        PayerKey.CARD_FINGERPRINT: payer.card_fingerprint,
    }
    return {key: value for key, value in values.items() if value}


def single_payment_limit(
    rules: RiskRules,
    currency: str,
    profile_limit_minor: int | None,
    platform_limit_minor: int | None,
) -> int | None:
    """The single-payment limit of a payment in `currency`, in its minor units; None: none.

    The rules' own limit for the currency; else the merchant profile's, else the platform
    default, which are single numbers and so apply only to the currencies payrail accepted
    before limits were per currency (where they always applied); else no limit.
    """
    limits = rules.amount_limits.get(currency)
    if limits is not None and limits.single_payment_limit_minor is not None:
        return limits.single_payment_limit_minor
    if currency not in CURRENCIES_BEFORE_PER_CURRENCY_SETTINGS:
        return None
    return profile_limit_minor or platform_limit_minor


def utc_day(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar day containing `moment`, as [start, end)."""
    start = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def count_in_window(times: Sequence[datetime], now: datetime, window_seconds: int) -> int:
    """How many of `times` lie in the window of `window_seconds` that ends at `now`
    (older than `now - window` excluded, exactly that old excluded too)."""
    start = now - timedelta(seconds=window_seconds)
    return sum(1 for moment in times if start < moment <= now)


def robust_score(amount_minor: int, recent_amounts: Sequence[int]) -> float:
    """|amount - median| / (1.4826 * MAD) over the merchant's recent amounts."""
    median = statistics.median(recent_amounts)
    mad = statistics.median(abs(amount - median) for amount in recent_amounts)
    spread = MAD_TO_SIGMA * max(mad, MAD_FLOOR_FRACTION * median, 1.0)
    return abs(amount_minor - median) / spread


@dataclass(frozen=True)
class PaymentFacts:
    payment_id: str
    amount_minor: int
    currency: str
    payer: Payer | None
    occurred_at: datetime


@dataclass(frozen=True)
class RiskHistory:
    """What the risk service knows before this payment (never counting it).

    Day totals cover the UTC day of the payment and payments not denied; amounts are
    those of the payment's currency, counts those of every currency. Payer totals and
    `velocity_times` (the times of earlier payments with the same value of each key) are
    the merchant's own; `blocked` the payer's keys on the platform's block list.
    """

    payer_day_amount_minor: int = 0
    payer_day_count: int = 0
    merchant_day_amount_minor: int = 0
    merchant_day_count: int = 0
    velocity_times: Mapping[PayerKey, Sequence[datetime]] = field(default_factory=dict)
    recent_amounts: Sequence[int] = ()
    blocked: frozenset[PayerKey] = frozenset()


def _over(limit: int | None, value: int) -> bool:
    return limit is not None and value > limit


def _limit_checks(
    facts: PaymentFacts, rules: RiskRules, limits: CurrencyLimits, history: RiskHistory
) -> list[tuple[str, int | None, int, str]]:
    """Every daily and KYC limit as (rule id, limit, value with this payment, what it
    counts): amounts against `limits`, those of the payment's currency, and counts
    against `rules`, over payments in every currency."""
    amount, currency = facts.amount_minor, facts.currency
    checks: list[tuple[str, int | None, int, str]] = [
        (MERCHANT_DAILY_AMOUNT_RULE, limits.merchant_daily_amount_limit_minor,
         history.merchant_day_amount_minor + amount, f"minor units of {currency} today"),
        (MERCHANT_DAILY_COUNT_RULE, rules.merchant_daily_count_limit,
         history.merchant_day_count + 1, "payments today"),
    ]  # fmt: skip
    if PayerKey.PAYER in payer_keys(facts.payer):
        checks += [
            (PAYER_DAILY_AMOUNT_RULE, limits.payer_daily_amount_limit_minor,
             history.payer_day_amount_minor + amount,
             f"minor units of {currency} from the payer today"),
            (PAYER_DAILY_COUNT_RULE, rules.payer_daily_count_limit,
             history.payer_day_count + 1, "payments from the payer today"),
        ]  # fmt: skip
    if not rules.kyc_verified:
        checks += [
            (KYC_SINGLE_PAYMENT_RULE, limits.unverified_single_payment_limit_minor, amount,
             f"minor units of {currency} in one payment for a merchant not yet verified"),
            (KYC_DAILY_AMOUNT_RULE, limits.unverified_daily_amount_limit_minor,
             history.merchant_day_amount_minor + amount,
             f"minor units of {currency} today for a merchant not yet verified"),
        ]  # fmt: skip
    return checks


def _velocity(facts: PaymentFacts, rules: RiskRules, history: RiskHistory) -> list[FiredRule]:
    keys = payer_keys(facts.payer)
    fired = []
    for velocity in rules.velocity:
        if velocity.key not in keys:
            continue
        times = history.velocity_times.get(velocity.key, ())
        count = count_in_window(times, facts.occurred_at, velocity.window_seconds) + 1
        if count > velocity.max_count:
            fired.append(
                FiredRule(
                    rule_id=velocity_rule_id(velocity),
                    reason=f"{count} payments from {velocity.key.value} "
                    f"{shown(keys[velocity.key])} within {velocity.window_seconds} s, "
                    f"more than {velocity.max_count}",
                )
            )
    return fired


def _deny_rules(
    facts: PaymentFacts, rules: RiskRules, single_limit_minor: int | None, history: RiskHistory
) -> list[FiredRule]:
    amount, currency = facts.amount_minor, facts.currency
    keys = payer_keys(facts.payer)
    fired = [
        FiredRule(
            rule_id=blocklist_rule_id(key), reason=f"{key.value} {shown(keys[key])} is blocked"
        )
        for key in PayerKey
        if key in history.blocked and key in keys
    ]
    limits = rules.amount_limits.get(currency)
    if limits is None:
        # No amount can be judged in a currency without limits: deny it, and let the
        # count limits and velocity still report what they see.
        configured = ", ".join(sorted(rules.amount_limits)) or "none"
        fired.append(
            FiredRule(
                rule_id=CURRENCY_NOT_CONFIGURED_RULE,
                reason=f"no amount limits are set in {currency} (set: {configured})",
            )
        )
        limits = CurrencyLimits()
    if _over(single_limit_minor, amount):
        fired.append(
            FiredRule(
                rule_id=SINGLE_PAYMENT_LIMIT_RULE,
                reason=f"amount {amount} {currency} exceeds the single-payment limit of "
                f"{single_limit_minor}",
            )
        )
    fired += [
        FiredRule(rule_id=rule_id, reason=f"{value} {what} would exceed the limit of {limit}")
        for rule_id, limit, value, what in _limit_checks(facts, rules, limits, history)
        if _over(limit, value)
    ]
    return fired + _velocity(facts, rules, history)


def evaluate(
    facts: PaymentFacts, rules: RiskRules, single_limit_minor: int | None, history: RiskHistory
) -> RiskDecisionMadePayload:
    """Deny when any deny rule fires (score 100); else hold for review when the amount
    is anomalous for the merchant (score 50 to 99); else approve (score 0 to 49, from
    the amount's anomaly score when the merchant's amounts are scored).

    `single_limit_minor` is the payment's single-payment limit in its currency
    (`single_payment_limit`), None for none."""
    denied = _deny_rules(facts, rules, single_limit_minor, history)
    if denied:
        return RiskDecisionMadePayload(
            payment_id=facts.payment_id,
            outcome=RiskOutcome.DENY,
            score=100,
            fired_rules=tuple(denied),
        )
    threshold = rules.anomaly_review_score
    if threshold is None or len(history.recent_amounts) < rules.anomaly_history_min:
        return RiskDecisionMadePayload(
            payment_id=facts.payment_id, outcome=RiskOutcome.APPROVE, score=0
        )
    score = robust_score(facts.amount_minor, history.recent_amounts)
    if score >= threshold:
        median = statistics.median(history.recent_amounts)
        return RiskDecisionMadePayload(
            payment_id=facts.payment_id,
            outcome=RiskOutcome.REVIEW,
            score=min(99, 50 + int(score)),
            fired_rules=(
                FiredRule(
                    rule_id=ANOMALY_RULE,
                    reason=f"amount {facts.amount_minor} {facts.currency} scores {score:.1f} "
                    f"against the merchant's recent median {median:.0f}, review from {threshold:g}",
                ),
            ),
        )
    return RiskDecisionMadePayload(
        payment_id=facts.payment_id,
        outcome=RiskOutcome.APPROVE,
        score=min(49, int(score * 49 / threshold)),
    )
