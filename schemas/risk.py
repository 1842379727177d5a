"""Risk decisions. The risk service decides before any channel is charged."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

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


class RiskDecisionMade(Event):
    topic: ClassVar[Topic] = Topic.RISK_DECISIONS
    event_type: Literal["RiskDecisionMade"] = "RiskDecisionMade"
    schema_version: Literal[1] = 1
    payload: RiskDecisionMadePayload
