"""The ledger's pure rules: fee rounding, account names and balanced journal entries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.common import Channel, FeePlan
from schemas.ledger import AdjustmentPostedPayload, Posting
from schemas.money import AMOUNT_MINOR_MAX, divide_round_half_even
from schemas.payments import PaymentSucceededPayload, Split, SplitRefused, check_splits
from schemas.refunds import RefundInitiator, RefundSucceededPayload
from services.common.invariant import InvariantViolation
from services.ledger.domain import (
    FEE_REVENUE_ACCOUNT,
    InvalidMerchantId,
    UnbalancedEntry,
    adjustment_entry,
    channel_receivable_account,
    check_balanced,
    entry_id_for,
    fee_for,
    merchant_account_prefix,
    merchant_pending_account,
    payment_succeeded_entry,
    refund_succeeded_entry,
)


def plan(basis_points: int, fixed_minor: int = 0, currency: str = "CNY") -> FeePlan:
    """A plan pricing `currency` with a fixed part of `fixed_minor` of its minor units."""
    return FeePlan(basis_points=basis_points, fixed_minor_by_currency={currency: fixed_minor})


def payment(
    amount_minor: int,
    fee_plan: FeePlan,
    *,
    currency: str = "CNY",
    channel: Channel = Channel.ALIPAY,
) -> PaymentSucceededPayload:
    return PaymentSucceededPayload(
        order_id=f"order-{uuid.uuid4().hex[:8]}",
        amount_minor=amount_minor,
        currency=currency,
        channel=channel,
        fee_plan=fee_plan,
        channel_trade_id=f"trade-{uuid.uuid4().hex[:8]}",
        paid_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )


def merchant_id() -> str:
    return f"mch_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize(
    ("amount_minor", "basis_points", "fixed_minor", "fee_minor"),
    [
        pytest.param(10_000, 60, 0, 60, id="exact"),
        pytest.param(250, 100, 0, 2, id="tie-2.5-rounds-down-to-even"),
        pytest.param(350, 100, 0, 4, id="tie-3.5-rounds-up-to-even"),
        pytest.param(50, 100, 0, 0, id="tie-0.5-rounds-down-to-zero"),
        pytest.param(150, 100, 0, 2, id="tie-1.5-rounds-up-to-two"),
        pytest.param(251, 100, 0, 3, id="above-tie-rounds-up"),
        pytest.param(249, 100, 0, 2, id="below-tie-rounds-down"),
        pytest.param(12_345, 250, 30, 339, id="fixed-part-added-after-rounding"),
        pytest.param(10_000, 0, 0, 0, id="zero-basis-points"),
        pytest.param(10_000, 0, 25, 25, id="zero-basis-points-fixed-only"),
        pytest.param(100, 60, 200, 100, id="fixed-part-capped-at-gross"),
        pytest.param(1, 10_000, 0, 1, id="ten-thousand-basis-points-one-minor-unit"),
        pytest.param(9_999, 10_000, 0, 9_999, id="ten-thousand-basis-points-whole-amount"),
        pytest.param(9_999, 10_000, 5, 9_999, id="whole-amount-plus-fixed-capped"),
        pytest.param(AMOUNT_MINOR_MAX, 10_000, 0, AMOUNT_MINOR_MAX, id="largest-amount"),
    ],
)
def test_fee_rounds_half_to_even_and_is_capped_at_gross(
    amount_minor: int, basis_points: int, fixed_minor: int, fee_minor: int
) -> None:
    assert fee_for(amount_minor, "CNY", plan(basis_points, fixed_minor)) == fee_minor


@pytest.mark.parametrize(
    ("numerator", "denominator", "quotient"),
    [(0, 7, 0), (5, 10, 0), (15, 10, 2), (25, 10, 2), (35, 10, 4), (26, 10, 3), (24, 10, 2)],
)
def test_integer_division_rounds_half_to_even(
    numerator: int, denominator: int, quotient: int
) -> None:
    assert divide_round_half_even(numerator, denominator) == quotient


@given(
    amount_minor=st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX),
    basis_points=st.integers(min_value=0, max_value=10_000),
    fixed_minor=st.integers(min_value=0, max_value=AMOUNT_MINOR_MAX),
)
def test_fee_matches_exact_rational_rounding(
    amount_minor: int, basis_points: int, fixed_minor: int
) -> None:
    # Python's round() of a Fraction is exact and rounds ties to even: an independent oracle.
    expected = min(fixed_minor + round(Fraction(amount_minor * basis_points, 10_000)), amount_minor)
    fee_minor = fee_for(amount_minor, "CNY", plan(basis_points, fixed_minor))
    assert fee_minor == expected
    assert 0 <= fee_minor <= amount_minor


def test_fee_refuses_a_non_positive_amount() -> None:
    with pytest.raises(InvariantViolation):
        fee_for(0, "CNY", plan(60))


def test_account_ids() -> None:
    assert channel_receivable_account(Channel.ALIPAY) == "platform:channel_receivable:alipay"
    assert channel_receivable_account("wechat_pay") == "platform:channel_receivable:wechat_pay"
    assert merchant_pending_account("mch_1") == "merchant:mch_1:pending"
    assert merchant_account_prefix("mch_1") == "merchant:mch_1:"
    assert FEE_REVENUE_ACCOUNT == "platform:fee_revenue"


@pytest.mark.parametrize("bad_merchant_id", ["", "mch:1"])
def test_a_merchant_id_that_would_make_account_ids_ambiguous_is_refused(
    bad_merchant_id: str,
) -> None:
    with pytest.raises(InvalidMerchantId):
        merchant_pending_account(bad_merchant_id)


def test_unknown_channel_has_no_receivable_account() -> None:
    with pytest.raises(ValueError, match="not_a_channel"):
        channel_receivable_account("not_a_channel")


def test_entry_id_is_deterministic_from_the_source_event() -> None:
    source_event_id = uuid.uuid4()
    expected = "je_" + uuid.uuid5(uuid.NAMESPACE_URL, f"payrail:ledger:{source_event_id}").hex
    assert entry_id_for(source_event_id) == expected
    assert entry_id_for(str(source_event_id)) == expected
    assert entry_id_for(uuid.uuid4()) != expected


def test_payment_succeeded_entry_debits_the_channel_and_credits_merchant_and_fees() -> None:
    merchant = merchant_id()
    postings = payment_succeeded_entry(
        payment(10_000, plan(60, 10, "USD"), currency="USD"), merchant
    )
    assert postings == [
        Posting(
            account_id="platform:channel_receivable:alipay", currency="USD", amount_minor=10_000
        ),
        Posting(account_id=f"merchant:{merchant}:pending", currency="USD", amount_minor=-9_930),
        Posting(account_id="platform:fee_revenue", currency="USD", amount_minor=-70),
    ]
    assert sum(posting.amount_minor for posting in postings) == 0


def test_zero_fee_entry_has_two_lines() -> None:
    merchant = merchant_id()
    postings = payment_succeeded_entry(
        payment(5_000, plan(0), channel=Channel.CARD), merchant_id=merchant
    )
    assert [(p.account_id, p.amount_minor) for p in postings] == [
        ("platform:channel_receivable:card", 5_000),
        (f"merchant:{merchant}:pending", -5_000),
    ]


def test_fee_equal_to_gross_leaves_no_merchant_line() -> None:
    postings = payment_succeeded_entry(payment(100, plan(0, 500)), merchant_id())
    assert [(p.account_id, p.amount_minor) for p in postings] == [
        ("platform:channel_receivable:alipay", 100),
        ("platform:fee_revenue", -100),
    ]


@given(
    amount_minor=st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX),
    basis_points=st.integers(min_value=0, max_value=10_000),
    fixed_minor=st.integers(min_value=0, max_value=10_000),
    currency=st.sampled_from(["CNY", "USD", "JPY"]),
)
def test_every_payment_entry_balances(
    amount_minor: int, basis_points: int, fixed_minor: int, currency: str
) -> None:
    postings = payment_succeeded_entry(
        payment(amount_minor, plan(basis_points, fixed_minor, currency), currency=currency),
        "mch_p",
    )
    check_balanced(postings)
    assert 2 <= len(postings) <= 3
    assert sum(p.amount_minor for p in postings) == 0
    assert all(p.currency == currency and p.amount_minor != 0 for p in postings)
    assert postings[0].amount_minor == amount_minor


def line(account_id: str, amount_minor: int, currency: str = "CNY") -> Posting:
    return Posting(account_id=account_id, currency=currency, amount_minor=amount_minor)


def test_check_balanced_accepts_a_multi_currency_entry_balanced_per_currency() -> None:
    check_balanced([line("a", 100), line("b", -100), line("c", 7, "USD"), line("d", -7, "USD")])


@pytest.mark.parametrize(
    ("postings", "message"),
    [
        pytest.param([line("a", 100), line("b", -99)], "CNY postings sum to 1", id="off-by-one"),
        pytest.param(
            [line("a", 100), line("b", -100, "USD")], "CNY postings sum to 100", id="per-currency"
        ),
        pytest.param([line("a", 0), line("b", 0)], "posting 1 on a is zero", id="zero-line"),
        pytest.param([line("a", 100)], "two or more postings", id="one-line"),
        pytest.param([], "two or more postings", id="empty"),
    ],
)
def test_check_balanced_refuses_a_malformed_entry(postings: list[Posting], message: str) -> None:
    with pytest.raises(UnbalancedEntry, match=message) as raised:
        check_balanced(postings)
    assert raised.value.code == "unbalanced_entry"


def test_money_paid_after_close_is_owed_back_in_full_without_fee_or_merchant_share() -> None:
    from datetime import UTC, datetime

    from schemas.payments import PaymentPaidAfterClosePayload
    from services.ledger.domain import REFUNDS_CLEARING_ACCOUNT, paid_after_close_entry

    payload = PaymentPaidAfterClosePayload(
        order_id="o-late",
        amount_minor=777,
        currency="CNY",
        channel="alipay",
        fee_plan={"basis_points": 60, "fixed_minor": 10},
        channel_trade_id="T-late",
        paid_at=datetime(2026, 11, 22, tzinfo=UTC),
        closed_status="canceled",
    )
    postings = paid_after_close_entry(payload)
    assert [(p.account_id, p.amount_minor) for p in postings] == [
        ("platform:channel_receivable:alipay", 777),
        (REFUNDS_CLEARING_ACCOUNT, -777),
    ]
    check_balanced(postings)


def refund(amount_minor: int, initiator: RefundInitiator) -> RefundSucceededPayload:
    return RefundSucceededPayload(
        refund_id="re_1",
        amount_minor=amount_minor,
        currency="CNY",
        channel=Channel.WECHAT_PAY,
        reason="requested_by_customer",
        initiator=initiator,
        order_id="order-1",
        channel_refund_id="R1",
        succeeded_at=datetime(2026, 11, 22, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("initiator", "debited"),
    [
        (RefundInitiator.MERCHANT, "merchant:mch_1:pending"),
        (RefundInitiator.ORDER_CANCELLED, "merchant:mch_1:pending"),
        (RefundInitiator.PAID_AFTER_CLOSE, "platform:refunds_clearing"),
    ],
)
def test_a_refund_debits_who_owed_the_payer_and_credits_the_channel(
    initiator: RefundInitiator, debited: str
) -> None:
    postings = refund_succeeded_entry(refund(250, initiator), "mch_1")
    assert [(p.account_id, p.amount_minor) for p in postings] == [
        (debited, 250),
        ("platform:channel_receivable:wechat_pay", -250),
    ]


def test_splits_credit_each_recipient_and_the_merchant_keeps_the_rest_less_the_fee() -> None:
    # 10,000 at 100 bp: fee 100; 3,000 to a seller and 900 to a partner; 6,000 kept.
    shared = payment(10_000, plan(100)).model_copy(
        update={
            "splits": (
                Split(recipient_id="mch_seller", amount_minor=3_000),
                Split(recipient_id="mch_partner", amount_minor=900),
            )
        }
    )
    lines = {p.account_id: p.amount_minor for p in payment_succeeded_entry(shared, "mch_shop")}
    assert lines == {
        "platform:channel_receivable:alipay": 10_000,
        "merchant:mch_shop:pending": -6_000,
        "merchant:mch_seller:pending": -3_000,
        "merchant:mch_partner:pending": -900,
        "platform:fee_revenue": -100,
    }


def test_splits_may_take_the_whole_net_leaving_the_merchant_no_line() -> None:
    shared = payment(1_000, plan(100)).model_copy(
        update={"splits": (Split(recipient_id="mch_seller", amount_minor=990),)}
    )
    accounts = [p.account_id for p in payment_succeeded_entry(shared, "mch_shop")]
    assert "merchant:mch_shop:pending" not in accounts


@pytest.mark.parametrize(
    ("splits", "code"),
    [
        ((Split(recipient_id="mch_a", amount_minor=991),), "split_exceeds_available"),
        (
            (
                Split(recipient_id="mch_a", amount_minor=500),
                Split(recipient_id="mch_b", amount_minor=491),
            ),
            "split_exceeds_available",
        ),
        (
            (
                Split(recipient_id="mch_a", amount_minor=1),
                Split(recipient_id="mch_a", amount_minor=1),
            ),
            "split_recipient_repeated",
        ),
    ],
)
def test_splits_beyond_the_net_or_naming_a_recipient_twice_are_refused(
    splits: tuple[Split, ...], code: str
) -> None:
    # 1,000 at 100 bp leaves 990 to share.
    with pytest.raises(SplitRefused) as refused:
        check_splits(splits, 1_000, "CNY", plan(100))
    assert refused.value.code == code
    with pytest.raises(ValidationError):
        PaymentSucceededPayload.model_validate(
            {**payment(1_000, plan(100)).model_dump(), "splits": [s.model_dump() for s in splits]}
        )


@pytest.mark.parametrize("amount", [500, -500])
def test_an_adjustment_moves_available_against_the_platform_adjustments_account(
    amount: int,
) -> None:
    adjustment = AdjustmentPostedPayload(
        adjustment_id="adj_1", currency="CNY", amount_minor=amount, reason="goodwill"
    )
    postings = adjustment_entry(adjustment, "mch_1")
    assert [(p.account_id, p.amount_minor) for p in postings] == [
        ("platform:adjustments", amount),
        ("merchant:mch_1:available", -amount),
    ]


def test_an_adjustment_of_nothing_is_refused() -> None:
    with pytest.raises(ValidationError):
        AdjustmentPostedPayload(adjustment_id="adj_1", currency="CNY", amount_minor=0, reason="x")
