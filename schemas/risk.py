"""Risk rules, block list and decisions. The risk service decides before any channel is
charged: approve, hold for manual review, or deny, with a score and every rule that fired.
Rules are configured per merchant (platform defaults otherwise); every change is an event.
A payer's values (id, IP, device, card fingerprint) are counted within its merchant; the
block list applies platform-wide.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from schemas.envelope import Contract, Event
from schemas.money import CURRENCIES_BEFORE_PER_CURRENCY_SETTINGS, CURRENCY_EXPONENTS, CurrencyCode
from schemas.topics import Topic


class RiskOutcome(StrEnum):
    APPROVE = "approve"
    REVIEW = "review"
    DENY = "deny"


class FiredRule(Contract):
    rule_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(max_length=512)


class RiskDecisionMadePayload(Contract):
    payment_id: str = Field(min_length=1, max_length=128)
    outcome: RiskOutcome
    score: int = Field(ge=0, le=100)
    fired_rules: tuple[FiredRule, ...] = ()
    reviewed_by: str | None = Field(
        default=None,
        max_length=128,
        description="Set on a reviewer's decision about a payment held for review.",
    )


class RiskDecisionMade(Event):
    topic: ClassVar[Topic] = Topic.RISK_DECISIONS
    event_type: Literal["RiskDecisionMade"] = "RiskDecisionMade"
    schema_version: Literal[1] = 1
    payload: RiskDecisionMadePayload


class PayerKey(StrEnum):
    """What identifies a payer to velocity rules and the block list."""

    PAYER = "payer"
    IP = "ip"
    DEVICE = "device"
    CARD_FINGERPRINT = "card_fingerprint"


class VelocityRule(Contract):
    """At most `max_count` payments per `key` value within any `window_seconds`."""

    key: PayerKey
    window_seconds: int = Field(strict=True, ge=1, le=7 * 86_400)
    max_count: int = Field(strict=True, ge=1, le=100_000)


def _default_velocity() -> tuple[VelocityRule, ...]:
    return (
        VelocityRule(key=PayerKey.PAYER, window_seconds=60, max_count=10),
        VelocityRule(key=PayerKey.DEVICE, window_seconds=60, max_count=10),
        VelocityRule(key=PayerKey.IP, window_seconds=60, max_count=30),
        VelocityRule(key=PayerKey.CARD_FINGERPRINT, window_seconds=600, max_count=10),
    )


OptionalLimit = Annotated[int | None, Field(default=None, strict=True, ge=1, le=10**15)]

# The rules that were amounts in any currency before limits were per currency (v1 of
# RiskRules); `upcast_rules_v1_v2` moves them into `amount_limits`.
CURRENCY_BLIND_LIMITS: tuple[str, ...] = (
    "single_payment_limit_minor",
    "payer_daily_amount_limit_minor",
    "merchant_daily_amount_limit_minor",
    "unverified_single_payment_limit_minor",
    "unverified_daily_amount_limit_minor",
)


class CurrencyLimits(Contract):
    """A merchant's amount limits in one currency, in that currency's minor units (its
    ISO 4217 exponent: 50000 is 500.00 CNY, 50000 JPY or 50.000 BHD). A null limit is
    off. Amounts are summed per currency: a payment counts only towards the day totals
    of its own currency."""

    single_payment_limit_minor: OptionalLimit = Field(
        default=None,
        description="Null: the merchant profile's single_payment_limit_minor, else the "
        "platform default; both are single numbers and apply only to the currencies "
        "payrail accepted before limits were per currency (CNY HKD USD EUR GBP SGD JPY "
        "KRW). For any other currency null means no single-payment limit.",
    )
    payer_daily_amount_limit_minor: OptionalLimit = None
    merchant_daily_amount_limit_minor: OptionalLimit = None
    unverified_single_payment_limit_minor: OptionalLimit = None
    unverified_daily_amount_limit_minor: OptionalLimit = None


# The platform defaults keep the numbers every currency had before limits were per
# currency (v1's defaults); a currency added since has no default and is set per merchant.
PLATFORM_DEFAULT_LIMITS = CurrencyLimits(
    payer_daily_amount_limit_minor=2_000_000,
    unverified_single_payment_limit_minor=50_000,
    unverified_daily_amount_limit_minor=200_000,
)


def _default_amount_limits() -> dict[str, CurrencyLimits]:
    return {
        currency: PLATFORM_DEFAULT_LIMITS for currency in CURRENCIES_BEFORE_PER_CURRENCY_SETTINGS
    }


class RiskRules(Contract):
    """One merchant's risk configuration; a field left null switches that limit off.
    Amount limits are set per currency in `amount_limits`; a payment in a currency the
    table does not name is denied (`limit.currency_not_configured`). Count limits and
    velocity count a payer's payments in every currency together. Days are UTC calendar
    days."""

    amount_limits: dict[CurrencyCode, CurrencyLimits] = Field(
        default_factory=_default_amount_limits,
        max_length=len(CURRENCY_EXPONENTS),
        description="Amount limits per ISO 4217 currency, in its minor units.",
    )
    payer_daily_count_limit: OptionalLimit = 50
    merchant_daily_count_limit: OptionalLimit = None
    velocity: tuple[VelocityRule, ...] = Field(default_factory=_default_velocity, max_length=20)
    kyc_verified: bool = Field(
        default=True, description="False: the unverified merchant limits apply."
    )
    anomaly_review_score: float | None = Field(
        default=None,
        ge=1.0,
        le=1000.0,
        description="Hold for review when the amount's robust z-score against the "
        "merchant's recent amounts in the same currency (|x - median| / (1.4826 MAD)) "
        "reaches this, e.g. 8; null (the default): amounts are not scored.",
    )
    anomaly_history_min: int = Field(
        default=20,
        strict=True,
        ge=3,
        le=10_000,
        description="Recent payments needed before amounts are scored.",
    )


def upcast_rules_v1_v2(rules: dict[str, Any]) -> dict[str, Any]:
    """Rules of v1 held each amount limit as one number that applied, in minor units, to
    a payment in any currency. v2 keeps exactly what they enforced: the same limits for
    each currency payrail accepted then. Rules already of v2 are returned unchanged.

    Stored rules (`risk_rules.rules`) and `RiskRulesUpdated` v1 events both pass here.
    """
    if not any(name in rules for name in CURRENCY_BLIND_LIMITS):
        return rules
    defaults = PLATFORM_DEFAULT_LIMITS.model_dump()
    limits = {name: rules.get(name, defaults[name]) for name in CURRENCY_BLIND_LIMITS}
    upgraded = {key: value for key, value in rules.items() if key not in CURRENCY_BLIND_LIMITS}
    upgraded["amount_limits"] = {
        currency: dict(limits) for currency in CURRENCIES_BEFORE_PER_CURRENCY_SETTINGS
    }
    return upgraded


class RiskRulesUpdatedPayload(Contract):
    rules: RiskRules


class RiskRulesUpdated(Event):
    """A merchant's risk rules changed; they apply to its next payment."""

    topic: ClassVar[Topic] = Topic.RISK_DECISIONS
    event_type: Literal["RiskRulesUpdated"] = "RiskRulesUpdated"
    schema_version: Literal[2] = 2
    payload: RiskRulesUpdatedPayload


def upcast_risk_rules_updated_v1_v2(raw: dict[str, object]) -> dict[str, object]:
    """v1 held currency-blind amount limits; v2 holds them per currency
    (`upcast_rules_v1_v2`)."""
    payload = dict(raw["payload"])  # type: ignore[call-overload]
    payload["rules"] = upcast_rules_v1_v2(dict(payload["rules"]))
    return {**raw, "payload": payload, "schema_version": 2}


class BlocklistChangedPayload(Contract):
    key: PayerKey
    value: str = Field(min_length=1, max_length=128)
    blocked: bool
    reason: str = Field(default="", max_length=500)


class BlocklistChanged(Event):
    """A payer, IP, device or card fingerprint was blocked (or unblocked), platform-wide."""

    topic: ClassVar[Topic] = Topic.RISK_DECISIONS
    event_type: Literal["BlocklistChanged"] = "BlocklistChanged"
    schema_version: Literal[1] = 1
    payload: BlocklistChangedPayload


class RiskAlertKind(StrEnum):
    CHANNEL_SUCCESS_RATE_LOW = "channel_success_rate_low"
    MERCHANT_REFUND_RATE_HIGH = "merchant_refund_rate_high"
    PAYER_FAILURE_BURST = "payer_failure_burst"


class RiskAlertRaisedPayload(Contract):
    kind: RiskAlertKind
    subject: str = Field(min_length=1, max_length=128, description="Channel, merchant or payer.")
    value: float
    threshold: float
    message: str = Field(min_length=1, max_length=500)


class RiskAlertRaised(Event):
    """Something operations should look at, seen in the stream after the fact."""

    topic: ClassVar[Topic] = Topic.RISK_DECISIONS
    event_type: Literal["RiskAlertRaised"] = "RiskAlertRaised"
    schema_version: Literal[1] = 1
    payload: RiskAlertRaisedPayload
