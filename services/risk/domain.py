"""Risk rules as pure functions of a payment and the merchant's limits."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.payments import PaymentTerms
from schemas.risk import FiredRule, RiskDecisionMadePayload, RiskOutcome

SINGLE_PAYMENT_LIMIT_RULE = "limit.single_payment_amount"


@dataclass(frozen=True)
class RiskLimits:
    """A merchant's limits, in minor units of the payment's currency."""

    single_payment_limit_minor: int


def single_payment_limit(terms: PaymentTerms, limits: RiskLimits) -> FiredRule | None:
    """Fires when the amount is strictly above the limit; the limit itself is allowed."""
    if terms.amount_minor > limits.single_payment_limit_minor:
        return FiredRule(
            rule_id=SINGLE_PAYMENT_LIMIT_RULE,
            reason=(
                f"amount {terms.amount_minor} {terms.currency} exceeds the single-payment "
                f"limit of {limits.single_payment_limit_minor}"
            ),
        )
    return None


def evaluate(payment_id: str, terms: PaymentTerms, limits: RiskLimits) -> RiskDecisionMadePayload:
    """Run every rule; any fired rule denies the payment."""
    fired = tuple(rule for rule in (single_payment_limit(terms, limits),) if rule is not None)
    return RiskDecisionMadePayload(
        payment_id=payment_id,
        outcome=RiskOutcome.DENY if fired else RiskOutcome.APPROVE,
        score=100 if fired else 0,
        fired_rules=fired,
    )
