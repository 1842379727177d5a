"""Money rules know currencies: fixed fees and risk amount limits are set per currency in
its own minor units (ISO 4217 exponent 0, 2 or 3), a currency without a setting is
refused, and settings recorded before keep what they meant."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.catalog import decode
from schemas.common import Channel, CurrencyNotPriced, FeePlan
from schemas.money import CURRENCY_EXPONENTS, UnknownCurrency, exponent_of, format_amount
from schemas.payments import Payer, PaymentSucceededPayload, PaymentTerms
from schemas.risk import (
    CurrencyLimits,
    RiskRules,
    RiskRulesUpdated,
    upcast_rules_v1_v2,
)
from schemas.topics import Topic
from services.common.invariant import InvariantViolation
from services.gateway.intake import Merchant, PaymentRefused, payment_request
from services.ledger.domain import FEE_REVENUE_ACCOUNT, fee_for, payment_succeeded_entry
from services.risk.domain import (
    CURRENCY_NOT_CONFIGURED_RULE,
    PAYER_DAILY_AMOUNT_RULE,
    PAYER_DAILY_COUNT_RULE,
    SINGLE_PAYMENT_LIMIT_RULE,
    PaymentFacts,
    RiskHistory,
    evaluate,
    single_payment_limit,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

# A card plan of 2.9 % plus a fixed part chosen per currency: 0.30 USD, 40 JPY, 400 KRW,
# 0.100 BHD. The same number in each would be 0.30 USD but 30 KRW.
CARD_PLAN = FeePlan(
    basis_points=290, fixed_minor_by_currency={"USD": 30, "JPY": 40, "KRW": 400, "BHD": 100}
)


@pytest.mark.parametrize(
    ("currency", "exponent", "shown"),
    [("JPY", 0, "30 JPY"), ("KRW", 0, "30 KRW"), ("USD", 2, "0.30 USD"), ("BHD", 3, "0.030 BHD")],
)
def test_thirty_minor_units_are_a_different_amount_at_each_exponent(
    currency: str, exponent: int, shown: str
) -> None:
    assert exponent_of(currency) == exponent
    assert format_amount(30, currency) == shown


def test_every_exponent_payrail_accepts_is_0_2_or_3_and_unknown_codes_are_refused() -> None:
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3}
    assert {"BHD", "JOD", "KWD", "OMR", "TND"} <= {
        code for code, exponent in CURRENCY_EXPONENTS.items() if exponent == 3
    }
    with pytest.raises(UnknownCurrency):
        exponent_of("XYZ")


@pytest.mark.parametrize(
    ("currency", "amount_minor", "fee_minor"),
    [
        # 100.00 USD: 2.90 + 0.30.
        ("USD", 10_000, 290 + 30),
        # 10,000 JPY: 290 + 40 yen.
        ("JPY", 10_000, 290 + 40),
        # 100,000 KRW: 2,900 + 400 won.
        ("KRW", 100_000, 2_900 + 400),
        # 100.000 BHD: 2.900 + 0.100.
        ("BHD", 100_000, 2_900 + 100),
        # The fee never exceeds the payment: 0.050 BHD pays 0.050.
        ("BHD", 50, 50),
    ],
    ids=["exponent-2", "exponent-0-jpy", "exponent-0-krw", "exponent-3", "exponent-3-capped"],
)
def test_the_fixed_fee_is_the_currencys_own(
    currency: str, amount_minor: int, fee_minor: int
) -> None:
    assert CARD_PLAN.fee_minor(amount_minor, currency) == fee_minor
    assert fee_for(amount_minor, currency, CARD_PLAN) == fee_minor
    # The plan a payment carries prices its currency only, and charges the same.
    carried = CARD_PLAN.for_currency(currency)
    assert carried.fixed_minor_by_currency == {
        currency: CARD_PLAN.fixed_minor_by_currency[currency]
    }
    assert fee_for(amount_minor, currency, carried) == fee_minor


@pytest.mark.parametrize("currency", ["USD", "JPY", "BHD"])
def test_the_ledger_books_the_currencys_fixed_fee(currency: str) -> None:
    payment = PaymentSucceededPayload(
        order_id="o-1",
        amount_minor=100_000,
        currency=currency,
        channel=Channel.CARD,
        fee_plan=CARD_PLAN.for_currency(currency),
        channel_trade_id="t-1",
        paid_at=NOW,
    )
    postings = payment_succeeded_entry(payment, "mch_1")
    fee = -sum(p.amount_minor for p in postings if p.account_id == FEE_REVENUE_ACCOUNT)
    assert fee == 2_900 + CARD_PLAN.fixed_minor_by_currency[currency]
    assert {p.currency for p in postings} == {currency}


@pytest.mark.parametrize("currency", ["CNY", "KWD"])
def test_a_currency_the_plan_does_not_price_is_refused(currency: str) -> None:
    with pytest.raises(CurrencyNotPriced) as refused:
        CARD_PLAN.for_currency(currency)
    assert refused.value.code == "currency_not_priced"
    with pytest.raises(CurrencyNotPriced):
        CARD_PLAN.fee_minor(10_000, currency)
    with pytest.raises(InvariantViolation):
        fee_for(10_000, currency, CARD_PLAN)
    # A payment's terms must carry a plan that prices its currency.
    with pytest.raises(ValidationError, match="sets no fixed fee in"):
        PaymentTerms(
            order_id="o-1",
            amount_minor=10_000,
            currency=currency,
            channel=Channel.CARD,
            fee_plan=CARD_PLAN,
        )


@pytest.mark.parametrize("currency", ["JPY", "CNY", "BHD"])
def test_a_plan_without_a_fixed_part_prices_every_currency(currency: str) -> None:
    plan = FeePlan(basis_points=60)
    assert plan.names_its_currencies
    assert plan.for_currency(currency) == plan
    assert plan.fee_minor(10_000, currency) == 60


def test_a_fixed_fee_that_names_no_currency_is_kept_for_old_payments_only() -> None:
    # A payment recorded before fixed fees were per currency was charged its one fixed
    # part in its own currency: replaying it gives the same fee.
    old = FeePlan.model_validate({"basis_points": 250, "fixed_minor": 30})
    assert old.fixed_minor_by_currency == {}
    assert fee_for(12_345, "JPY", old) == 339
    # A merchant's plan of that kind prices no currency for a new payment.
    assert not old.names_its_currencies
    with pytest.raises(CurrencyNotPriced):
        old.for_currency("CNY")
    with pytest.raises(ValidationError, match="fixed_minor names no currency"):
        FeePlan(basis_points=60, fixed_minor=30, fixed_minor_by_currency={"USD": 30})
    with pytest.raises(ValidationError):
        FeePlan(basis_points=60, fixed_minor_by_currency={"XYZ": 30})


def _merchant(plan: FeePlan) -> Merchant:
    return Merchant(
        merchant_id="mch_1",
        active=True,
        channels=(Channel.CARD,),
        fee_plans={Channel.CARD: plan},
        payment_expiry_minutes=30,
        refund_on_order_cancel=True,
    )


def test_payment_creation_refuses_a_currency_the_channel_does_not_price() -> None:
    def request(currency: str, plan: FeePlan = CARD_PLAN) -> PaymentTerms:
        return payment_request(
            _merchant(plan),
            order_id=f"o-{uuid.uuid4().hex[:8]}",
            amount_minor=10_000,
            currency=currency,
            channel=Channel.CARD,
            description="",
            requested_at=NOW,
        )

    assert request("JPY").fee_plan.fixed_minor_by_currency == {"JPY": 40}
    assert request("BHD").fee_plan.fixed_minor_by_currency == {"BHD": 100}
    with pytest.raises(PaymentRefused) as refused:
        request("CNY")
    assert refused.value.code == "currency_not_priced"
    with pytest.raises(PaymentRefused) as refused:
        request("USD", FeePlan.model_validate({"basis_points": 290, "fixed_minor": 30}))
    assert refused.value.code == "currency_not_priced"


# -- risk amount limits ------------------------------------------------------------------

# Amount limits per currency, each in its own minor units: 50,000 JPY, 500.00 USD and
# 50.000 BHD for one payment; 100,000 JPY, 1,000.00 USD and 100.000 BHD a payer a day.
LIMITS = RiskRules(
    amount_limits={
        "JPY": CurrencyLimits(
            single_payment_limit_minor=50_000, payer_daily_amount_limit_minor=100_000
        ),
        "USD": CurrencyLimits(
            single_payment_limit_minor=50_000, payer_daily_amount_limit_minor=100_000
        ),
        "BHD": CurrencyLimits(
            single_payment_limit_minor=50_000, payer_daily_amount_limit_minor=100_000
        ),
    },
    payer_daily_count_limit=5,
    velocity=(),
)
PAYER = Payer(id="payer-1")


def _fired(
    amount_minor: int,
    currency: str,
    rules: RiskRules = LIMITS,
    history: RiskHistory | None = None,
    profile_limit_minor: int | None = None,
) -> list[str]:
    facts = PaymentFacts(
        payment_id="pay_1",
        amount_minor=amount_minor,
        currency=currency,
        payer=PAYER,
        occurred_at=NOW,
    )
    single = single_payment_limit(rules, currency, profile_limit_minor, 5_000_000)
    decision = evaluate(facts, rules, single, history or RiskHistory())
    return [rule.rule_id for rule in decision.fired_rules]


@pytest.mark.parametrize("currency", ["JPY", "USD", "BHD"], ids=["exp-0", "exp-2", "exp-3"])
@pytest.mark.parametrize(
    ("amount_minor", "expected"), [(50_000, []), (50_001, [SINGLE_PAYMENT_LIMIT_RULE])]
)
def test_the_single_payment_limit_is_the_currencys_own(
    currency: str, amount_minor: int, expected: list[str]
) -> None:
    assert _fired(amount_minor, currency) == expected


@pytest.mark.parametrize("currency", ["JPY", "USD", "BHD"], ids=["exp-0", "exp-2", "exp-3"])
@pytest.mark.parametrize(
    ("before_minor", "expected"), [(90_000, []), (90_001, [PAYER_DAILY_AMOUNT_RULE])]
)
def test_the_payer_daily_amount_is_summed_in_the_currency(
    currency: str, before_minor: int, expected: list[str]
) -> None:
    # The history holds the payer's amount today in this payment's currency only.
    history = RiskHistory(payer_day_amount_minor=before_minor, payer_day_count=1)
    assert _fired(10_000, currency, history=history) == expected


def test_counts_span_currencies() -> None:
    # Five payments today in other currencies count towards the payer's limit of five.
    history = RiskHistory(payer_day_amount_minor=0, payer_day_count=5)
    assert _fired(1_000, "BHD", history=history) == [PAYER_DAILY_COUNT_RULE]


@pytest.mark.parametrize("currency", ["KRW", "KWD"], ids=["exp-0", "exp-3"])
def test_a_currency_without_limits_is_denied(currency: str) -> None:
    facts = PaymentFacts(
        payment_id="pay_1", amount_minor=100, currency=currency, payer=PAYER, occurred_at=NOW
    )
    decision = evaluate(facts, LIMITS, None, RiskHistory())
    assert decision.outcome.value == "deny"
    assert [rule.rule_id for rule in decision.fired_rules] == [CURRENCY_NOT_CONFIGURED_RULE]
    assert f"no amount limits are set in {currency}" in decision.fired_rules[0].reason


def test_the_platform_defaults_cover_the_currencies_accepted_before_and_not_new_ones() -> None:
    defaults = RiskRules()
    assert set(defaults.amount_limits) == {
        "CNY", "HKD", "USD", "EUR", "GBP", "SGD", "JPY", "KRW",
    }  # fmt: skip
    assert _fired(1_000, "JPY", defaults) == []
    assert _fired(1_000, "BHD", defaults) == [CURRENCY_NOT_CONFIGURED_RULE]


def test_the_single_payment_limit_falls_back_only_where_one_number_always_applied() -> None:
    unset = RiskRules(amount_limits={"JPY": CurrencyLimits(), "BHD": CurrencyLimits()})
    # The merchant profile's limit, else the platform default: single numbers that have
    # always applied to JPY (a currency accepted before limits were per currency).
    assert single_payment_limit(unset, "JPY", 7_000, 5_000_000) == 7_000
    assert single_payment_limit(unset, "JPY", None, 5_000_000) == 5_000_000
    # Never to a currency added since: 7,000 would be 7.000 BHD there.
    assert single_payment_limit(unset, "BHD", 7_000, 5_000_000) is None
    # The currency's own limit wins.
    assert single_payment_limit(LIMITS, "BHD", 7_000, 5_000_000) == 50_000


V1_RULES: dict[str, object] = {
    "single_payment_limit_minor": None,
    "payer_daily_amount_limit_minor": 10_000,
    "payer_daily_count_limit": 50,
    "merchant_daily_amount_limit_minor": None,
    "merchant_daily_count_limit": None,
    "velocity": [],
    "kyc_verified": True,
    "unverified_single_payment_limit_minor": 50_000,
    "unverified_daily_amount_limit_minor": 200_000,
    "anomaly_review_score": None,
    "anomaly_history_min": 20,
}


def test_v1_rules_keep_what_they_enforced_in_each_currency_of_then() -> None:
    rules = RiskRules.model_validate(upcast_rules_v1_v2(dict(V1_RULES)))
    assert set(rules.amount_limits) == {"CNY", "HKD", "USD", "EUR", "GBP", "SGD", "JPY", "KRW"}
    assert {limits.payer_daily_amount_limit_minor for limits in rules.amount_limits.values()} == {
        10_000
    }
    assert rules.payer_daily_count_limit == 50
    # Rules of v2 pass unchanged.
    current = rules.model_dump(mode="json")
    assert upcast_rules_v1_v2(current) == current


def test_a_v1_rules_updated_event_still_decodes() -> None:
    raw = {
        "event_id": str(uuid.uuid4()),
        "event_type": "RiskRulesUpdated",
        "schema_version": 1,
        "occurred_at": NOW.isoformat(),
        "producer": "risk",
        "aggregate_id": "risk_rules:mch_1",
        "aggregate_version": 1,
        "correlation_id": "risk_rules:mch_1",
        "merchant_id": "mch_1",
        "payload": {"rules": V1_RULES},
    }
    message = decode(Topic.RISK_DECISIONS, json.dumps(raw).encode())
    assert isinstance(message, RiskRulesUpdated)
    assert message.schema_version == 2
    assert message.payload.rules.amount_limits["KRW"].payer_daily_amount_limit_minor == 10_000
    assert "BHD" not in message.payload.rules.amount_limits
