from __future__ import annotations

import pytest

from schemas.common import Channel, FeePlan
from schemas.payments import PaymentTerms
from schemas.risk import RiskOutcome
from services.risk.domain import SINGLE_PAYMENT_LIMIT_RULE, RiskLimits, evaluate


def terms(amount_minor: int) -> PaymentTerms:
    return PaymentTerms(
        order_id="o",
        amount_minor=amount_minor,
        currency="CNY",
        channel=Channel.ALIPAY,
        fee_plan=FeePlan(basis_points=0, fixed_minor=0),
    )


@pytest.mark.parametrize(
    ("amount_minor", "outcome"),
    [(9_999, RiskOutcome.APPROVE), (10_000, RiskOutcome.APPROVE), (10_001, RiskOutcome.DENY)],
)
def test_single_payment_limit_on_its_edges(amount_minor: int, outcome: RiskOutcome) -> None:
    decision = evaluate("pay_1", terms(amount_minor), RiskLimits(single_payment_limit_minor=10_000))
    assert decision.outcome is outcome
    fired = [rule.rule_id for rule in decision.fired_rules]
    assert fired == ([SINGLE_PAYMENT_LIMIT_RULE] if outcome is RiskOutcome.DENY else [])
