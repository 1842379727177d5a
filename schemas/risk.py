"""Risk rules, block list and decisions. The risk service decides before any channel is
charged: approve, hold for manual review, or deny, with a score and every rule that fired.
Rules are configured per merchant (platform defaults otherwise); every change is an event.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas.envelope import Contract, Event
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


class RiskRules(Contract):
    """One merchant's risk configuration; a field left null switches that limit off.
    Amounts are minor units of the payment's currency; days are UTC calendar days."""

    single_payment_limit_minor: OptionalLimit = Field(
        default=None,
        description="Null: the merchant profile's single_payment_limit_minor, else the "
        "platform default.",
    )
    payer_daily_amount_limit_minor: OptionalLimit = 2_000_000
    payer_daily_count_limit: OptionalLimit = 50
    merchant_daily_amount_limit_minor: OptionalLimit = None
    merchant_daily_count_limit: OptionalLimit = None
    velocity: tuple[VelocityRule, ...] = Field(default_factory=_default_velocity, max_length=20)
    kyc_verified: bool = Field(
        default=True, description="False: the unverified merchant limits below apply."
    )
    unverified_single_payment_limit_minor: OptionalLimit = 50_000
    unverified_daily_amount_limit_minor: OptionalLimit = 200_000
    anomaly_review_score: float | None = Field(
        default=None,
        ge=1.0,
        le=1000.0,
        description="Hold for review when the amount's robust z-score against the "
        "merchant's recent amounts (|x - median| / (1.4826 MAD)) reaches this, e.g. 8; "
        "null (the default): amounts are not scored.",
    )
    anomaly_history_min: int = Field(
        default=20,
        strict=True,
        ge=3,
        le=10_000,
        description="Recent payments needed before amounts are scored.",
    )


class RiskRulesUpdatedPayload(Contract):
    rules: RiskRules


class RiskRulesUpdated(Event):
    """A merchant's risk rules changed; they apply to its next payment."""

    topic: ClassVar[Topic] = Topic.RISK_DECISIONS
    event_type: Literal["RiskRulesUpdated"] = "RiskRulesUpdated"
    schema_version: Literal[1] = 1
    payload: RiskRulesUpdatedPayload


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
