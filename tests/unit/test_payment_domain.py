"""The payment aggregate's decisions, pure: no database, no broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import Event, new_event
from schemas.channels import (
    ChannelPaymentPreparedPayload,
    ChannelPaymentRejectedPayload,
    ChannelPaymentSucceededPayload,
    CloseChannelTrade,
    SubmitChannelPayment,
)
from schemas.common import Channel, Failure, FeePlan, NextAction
from schemas.payments import (
    CancelPaymentPayload,
    PaymentActionRequired,
    PaymentCanceled,
    PaymentCreated,
    PaymentExpired,
    PaymentFailed,
    PaymentPaidAfterClose,
    PaymentRequest,
    PaymentRiskApproved,
    PaymentSucceeded,
)
from schemas.refunds import (
    ChannelRefundFailedPayload,
    ChannelRefundSucceededPayload,
    RefundFailed,
    RefundInitiator,
    RefundRefused,
    RefundRefusedPayload,
    RefundRequest,
    RefundRequested,
    RefundSucceeded,
    RefundTerms,
    SubmitChannelRefund,
)
from schemas.risk import FiredRule, RiskDecisionMadePayload, RiskOutcome
from services.common.decisions import Decision
from services.payment_center import domain
from services.payment_center.domain import PaymentStatus

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


EXPIRES_AT = NOW + timedelta(minutes=30)


def terms(amount_minor: int = 1999) -> PaymentRequest:
    return PaymentRequest(
        order_id=f"order-{uuid.uuid4().hex[:8]}",
        amount_minor=amount_minor,
        currency="CNY",
        channel=Channel.ALIPAY,
        description="coffee",
        fee_plan=FeePlan(basis_points=60, fixed_minor=0),
        expires_at=EXPIRES_AT,
    )


def apply(state: domain.Payment | None, decision: Decision, payment_id: str) -> domain.Payment:
    """Record a decision's events the way the handler would and fold them into the state."""
    version = state.version if state else 0
    for index, emit in enumerate(decision.events, start=1):
        event: Event = new_event(
            emit.event_type,
            emit.payload,
            aggregate_id=payment_id,
            aggregate_version=version + index,
            merchant_id="mch_a",
            producer="test",
            occurred_at=NOW,
            correlation_id="corr",
            causation_id=None,
        )
        state = domain.evolve(state, event)
    assert state is not None
    return state


def decision_of(
    outcome: RiskOutcome, rules: tuple[FiredRule, ...] = (), payment_id: str = "pay_1"
) -> RiskDecisionMadePayload:
    return RiskDecisionMadePayload(
        payment_id=payment_id, outcome=outcome, score=0 if not rules else 100, fired_rules=rules
    )


def prepared() -> ChannelPaymentPreparedPayload:
    return ChannelPaymentPreparedPayload(
        channel=Channel.ALIPAY,
        channel_trade_id="T1",
        next_action=NextAction(url="http://psp/pay/T1", qr_code="http://psp/qr/T1"),
    )


def paid(amount_minor: int = 1999, currency: str = "CNY") -> ChannelPaymentSucceededPayload:
    return ChannelPaymentSucceededPayload(
        channel=Channel.ALIPAY,
        channel_trade_id="T1",
        amount_minor=amount_minor,
        currency=currency,
        paid_at=NOW,
        notification_id=f"n-{uuid.uuid4().hex[:6]}",
    )


def payment_requiring_payment(payment_terms: PaymentRequest) -> domain.Payment:
    state = apply(None, domain.create_payment(None, payment_terms), "pay_1")
    state = apply(
        state, domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE)), "pay_1"
    )
    return apply(state, domain.apply_channel_prepared(state, prepared()), "pay_1")


def test_the_happy_path_reaches_succeeded_with_one_event_per_step() -> None:
    payment_terms = terms()
    created = domain.create_payment(None, payment_terms)
    assert [emit.event_type for emit in created.events] == [PaymentCreated]
    state = apply(None, created, "pay_1")
    assert state.status is PaymentStatus.AWAITING_RISK

    approved = domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE))
    assert [emit.event_type for emit in approved.events] == [PaymentRiskApproved]
    assert [send.command_type for send in approved.commands] == [SubmitChannelPayment]
    state = apply(state, approved, "pay_1")
    assert state.status is PaymentStatus.SUBMITTING

    action = domain.apply_channel_prepared(state, prepared())
    assert [emit.event_type for emit in action.events] == [PaymentActionRequired]
    state = apply(state, action, "pay_1")
    assert state.status is PaymentStatus.REQUIRES_PAYMENT
    assert state.next_action is not None and state.next_action.url == "http://psp/pay/T1"

    success = domain.apply_channel_succeeded(state, paid())
    assert [emit.event_type for emit in success.events] == [PaymentSucceeded]
    state = apply(state, success, "pay_1")
    assert state.status is PaymentStatus.SUCCEEDED
    assert state.version == 4


def test_creating_the_same_payment_again_decides_nothing_but_other_terms_conflict() -> None:
    payment_terms = terms()
    state = apply(None, domain.create_payment(None, payment_terms), "pay_1")
    assert domain.create_payment(state, payment_terms).is_empty
    with pytest.raises(domain.PaymentConflict):
        domain.create_payment(state, terms(amount_minor=5))


def test_risk_denial_fails_the_payment_naming_every_rule_that_fired() -> None:
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    rule = FiredRule(rule_id="limit.single_payment_amount", reason="too much")
    denied = domain.apply_risk_decision(state, decision_of(RiskOutcome.DENY, (rule,)))
    assert [emit.event_type for emit in denied.events] == [PaymentFailed]
    assert not denied.commands
    state = apply(state, denied, "pay_1")
    assert state.status is PaymentStatus.FAILED
    assert state.failure == Failure(
        code="risk_declined", message="too much", rule_ids=("limit.single_payment_amount",)
    )


def test_review_holds_the_payment_once_until_a_reviewer_decides() -> None:
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    held = domain.apply_risk_decision(state, decision_of(RiskOutcome.REVIEW))
    assert [type(emit.payload).__name__ for emit in held.events] == ["PaymentHeldForReviewPayload"]
    assert not held.commands
    state = apply(state, held, "pay_1")
    assert state.status is domain.PaymentStatus.AWAITING_RISK
    # A redelivered review holds nothing more; the reviewer's approval submits the payment.
    assert domain.apply_risk_decision(state, decision_of(RiskOutcome.REVIEW)).is_empty
    approved = domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE))
    assert [send.command_type.__name__ for send in approved.commands] == ["SubmitChannelPayment"]


def test_a_payment_held_for_review_may_still_expire() -> None:
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    state = apply(
        state, domain.apply_risk_decision(state, decision_of(RiskOutcome.REVIEW)), "pay_1"
    )
    assert state.expires_at is not None
    expired = domain.expire_payment(state, state.expires_at)
    assert [emit.event_type.__name__ for emit in expired.events] == ["PaymentExpired"]


def test_a_second_risk_decision_decides_nothing() -> None:
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    state = apply(
        state, domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE)), "pay_1"
    )
    assert domain.apply_risk_decision(state, decision_of(RiskOutcome.DENY)).is_empty


def test_duplicate_success_notifications_record_one_success() -> None:
    state = payment_requiring_payment(terms())
    state = apply(state, domain.apply_channel_succeeded(state, paid()), "pay_1")
    assert domain.apply_channel_succeeded(state, paid()).is_empty


def test_success_before_the_prepared_result_still_succeeds_and_prepared_then_decides_nothing() -> (
    None
):
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    state = apply(
        state, domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE)), "pay_1"
    )
    state = apply(state, domain.apply_channel_succeeded(state, paid()), "pay_1")
    assert state.status is PaymentStatus.SUCCEEDED
    assert domain.apply_channel_prepared(state, prepared()).is_empty


@pytest.mark.parametrize(("amount_minor", "currency"), [(1998, "CNY"), (1999, "USD")])
def test_a_channel_amount_that_differs_from_the_payment_is_refused(
    amount_minor: int, currency: str
) -> None:
    state = payment_requiring_payment(terms())
    with pytest.raises(domain.ChannelAmountMismatch):
        domain.apply_channel_succeeded(state, paid(amount_minor, currency))


def test_channel_rejection_fails_a_submitting_payment() -> None:
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    state = apply(
        state, domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE)), "pay_1"
    )
    failure = Failure(code="channel_trade_conflict", message="no")
    rejected = ChannelPaymentRejectedPayload(channel=Channel.ALIPAY, failure=failure)
    state = apply(state, domain.apply_channel_rejected(state, rejected), "pay_1")
    assert state.status is PaymentStatus.FAILED and state.failure == failure


@pytest.mark.parametrize(
    "decide",
    [
        lambda: domain.apply_risk_decision(None, decision_of(RiskOutcome.APPROVE)),
        lambda: domain.apply_channel_prepared(None, prepared()),
        lambda: domain.apply_channel_succeeded(None, paid()),
    ],
)
def test_inputs_for_an_unknown_payment_are_refused(decide: object) -> None:
    with pytest.raises(domain.UnknownPayment):
        decide()  # type: ignore[operator]


def open_payment(status: PaymentStatus) -> domain.Payment:
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    if status is PaymentStatus.AWAITING_RISK:
        return state
    state = apply(
        state, domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE)), "pay_1"
    )
    if status is PaymentStatus.SUBMITTING:
        return state
    return apply(state, domain.apply_channel_prepared(state, prepared()), "pay_1")


@pytest.mark.parametrize(
    ("status", "closes_trade"),
    [
        (PaymentStatus.AWAITING_RISK, False),
        (PaymentStatus.SUBMITTING, True),
        (PaymentStatus.REQUIRES_PAYMENT, True),
    ],
)
def test_an_open_payment_is_canceled_and_its_channel_trade_closed(
    status: PaymentStatus, closes_trade: bool
) -> None:
    state = open_payment(status)
    decision = domain.cancel_payment(state, CancelPaymentPayload(reason="customer_left"))
    assert [emit.event_type for emit in decision.events] == [PaymentCanceled]
    assert [send.command_type for send in decision.commands] == (
        [CloseChannelTrade] if closes_trade else []
    )
    state = apply(state, decision, "pay_1")
    assert state.status is PaymentStatus.CANCELED
    # Nothing moves a canceled payment any more.
    assert domain.cancel_payment(state, CancelPaymentPayload()).is_empty
    assert domain.apply_risk_decision(state, decision_of(RiskOutcome.APPROVE)).is_empty
    assert domain.apply_channel_prepared(state, prepared()).is_empty
    assert domain.expire_payment(state, EXPIRES_AT).is_empty
    # Money that arrives anyway is recorded once and refunded in full at once.
    late = domain.apply_channel_succeeded(state, paid())
    assert [emit.event_type for emit in late.events] == [PaymentPaidAfterClose, RefundRequested]
    assert [send.command_type for send in late.commands] == [SubmitChannelRefund]
    refund = late.events[1].payload
    assert isinstance(refund, RefundTerms)
    assert (refund.amount_minor, refund.initiator) == (1999, RefundInitiator.PAID_AFTER_CLOSE)
    state = apply(state, late, "pay_1")
    assert state.status is PaymentStatus.CANCELED and state.paid_after_close
    assert state.refundable_amount_minor == 0
    assert domain.apply_channel_succeeded(state, paid()).is_empty
    # The merchant cannot refund a closed payment's money a second time.
    refused = domain.request_refund(state, RefundRequest(refund_id="re_m"))
    assert [emit.event_type for emit in refused.events] == [RefundRefused]


def test_a_finished_payment_cannot_be_canceled() -> None:
    state = payment_requiring_payment(terms())
    state = apply(state, domain.apply_channel_succeeded(state, paid()), "pay_1")
    assert domain.cancel_payment(state, CancelPaymentPayload()).is_empty
    assert state.status is PaymentStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("now", "expires"),
    [
        (EXPIRES_AT - timedelta(microseconds=1), False),
        (EXPIRES_AT, True),
        (EXPIRES_AT + timedelta(hours=1), True),
    ],
)
def test_an_unpaid_payment_expires_at_its_expiry_time(now: datetime, expires: bool) -> None:
    state = payment_requiring_payment(terms())
    decision = domain.expire_payment(state, now)
    assert [emit.event_type for emit in decision.events] == ([PaymentExpired] if expires else [])
    assert [send.command_type for send in decision.commands] == (
        [CloseChannelTrade] if expires else []
    )
    if expires:
        assert apply(state, decision, "pay_1").status is PaymentStatus.EXPIRED


def test_a_payment_without_an_expiry_time_never_expires() -> None:
    request = terms().model_copy(update={"expires_at": None})
    state = apply(None, domain.create_payment(None, request), "pay_1")
    assert domain.expire_payment(state, NOW + timedelta(days=365)).is_empty


def test_a_paid_payment_does_not_expire() -> None:
    state = payment_requiring_payment(terms())
    state = apply(state, domain.apply_channel_succeeded(state, paid()), "pay_1")
    assert domain.expire_payment(state, EXPIRES_AT + timedelta(days=1)).is_empty


def paid_payment(amount_minor: int = 1999) -> domain.Payment:
    state = payment_requiring_payment(terms(amount_minor))
    return apply(state, domain.apply_channel_succeeded(state, paid(amount_minor)), "pay_1")


def refund_succeeded(refund_id: str, amount_minor: int) -> ChannelRefundSucceededPayload:
    return ChannelRefundSucceededPayload(
        refund_id=refund_id,
        channel=Channel.ALIPAY,
        channel_refund_id=f"R-{refund_id}",
        amount_minor=amount_minor,
        currency="CNY",
        succeeded_at=NOW,
        notification_id=f"n-{refund_id}",
    )


def refund_failed(refund_id: str) -> ChannelRefundFailedPayload:
    return ChannelRefundFailedPayload(
        refund_id=refund_id,
        channel=Channel.ALIPAY,
        failure=Failure(code="channel_refund_failed", message="bank account closed"),
    )


def refusal_code(decision: Decision) -> str:
    (emit,) = decision.events
    assert emit.event_type is RefundRefused
    assert isinstance(emit.payload, RefundRefusedPayload)
    return emit.payload.failure.code


def test_partial_refunds_up_to_the_paid_amount_then_one_more_is_refused() -> None:
    state = paid_payment(1000)
    for refund_id, amount in (("re_1", 300), ("re_2", 300), ("re_3", 400)):
        decision = domain.request_refund(
            state, RefundRequest(refund_id=refund_id, amount_minor=amount)
        )
        assert [emit.event_type for emit in decision.events] == [RefundRequested]
        assert [send.command_type for send in decision.commands] == [SubmitChannelRefund]
        state = apply(state, decision, "pay_1")
    assert state.refundable_amount_minor == 0
    one_more = domain.request_refund(state, RefundRequest(refund_id="re_4", amount_minor=1))
    assert refusal_code(one_more) == "refund_exceeds_captured"
    # A refund id seen before (accepted or refused) decides nothing.
    state = apply(state, one_more, "pay_1")
    assert domain.request_refund(state, RefundRequest(refund_id="re_4", amount_minor=1)).is_empty
    assert domain.request_refund(state, RefundRequest(refund_id="re_1", amount_minor=300)).is_empty


def test_a_refund_without_amount_takes_what_is_left_and_more_than_left_is_refused() -> None:
    state = paid_payment(1000)
    state = apply(
        state,
        domain.request_refund(state, RefundRequest(refund_id="re_1", amount_minor=250)),
        "pay_1",
    )
    too_much = domain.request_refund(state, RefundRequest(refund_id="re_2", amount_minor=751))
    assert refusal_code(too_much) == "refund_exceeds_captured"
    rest = domain.request_refund(state, RefundRequest(refund_id="re_3"))
    (emit,) = rest.events
    assert isinstance(emit.payload, RefundTerms) and emit.payload.amount_minor == 750


@pytest.mark.parametrize(
    "status",
    [PaymentStatus.AWAITING_RISK, PaymentStatus.SUBMITTING, PaymentStatus.REQUIRES_PAYMENT],
)
def test_an_unpaid_payment_cannot_be_refunded(status: PaymentStatus) -> None:
    state = open_payment(status)
    decision = domain.request_refund(state, RefundRequest(refund_id="re_1", amount_minor=1))
    assert refusal_code(decision) == "payment_not_paid"


def test_a_failed_refund_frees_its_amount_and_a_success_is_final() -> None:
    state = paid_payment(1000)
    state = apply(state, domain.request_refund(state, RefundRequest(refund_id="re_1")), "pay_1")
    assert state.refundable_amount_minor == 0
    failed = domain.apply_channel_refund_failed(state, refund_failed("re_1"))
    assert [emit.event_type for emit in failed.events] == [RefundFailed]
    state = apply(state, failed, "pay_1")
    assert state.refundable_amount_minor == 1000
    assert domain.apply_channel_refund_failed(state, refund_failed("re_1")).is_empty
    with pytest.raises(domain.RefundResultConflict):
        domain.apply_channel_refund_succeeded(state, refund_succeeded("re_1", 1000))
    # Retried as a new refund, it succeeds once.
    state = apply(state, domain.request_refund(state, RefundRequest(refund_id="re_2")), "pay_1")
    succeeded = domain.apply_channel_refund_succeeded(state, refund_succeeded("re_2", 1000))
    assert [emit.event_type for emit in succeeded.events] == [RefundSucceeded]
    state = apply(state, succeeded, "pay_1")
    assert domain.apply_channel_refund_succeeded(state, refund_succeeded("re_2", 1000)).is_empty
    with pytest.raises(domain.RefundResultConflict):
        domain.apply_channel_refund_failed(state, refund_failed("re_2"))
    assert state.refundable_amount_minor == 0


def test_refund_results_for_unknown_refunds_or_other_amounts_are_refused() -> None:
    state = paid_payment(1000)
    with pytest.raises(domain.UnknownRefund):
        domain.apply_channel_refund_succeeded(state, refund_succeeded("re_x", 1000))
    state = apply(
        state,
        domain.request_refund(state, RefundRequest(refund_id="re_1", amount_minor=10)),
        "pay_1",
    )
    with pytest.raises(domain.ChannelAmountMismatch):
        domain.apply_channel_refund_succeeded(state, refund_succeeded("re_1", 11))
    with pytest.raises(domain.UnknownPayment):
        domain.request_refund(None, RefundRequest(refund_id="re_2"))


def test_a_cancelled_order_refunds_a_paid_payment_once_when_asked() -> None:
    state = paid_payment(1000)
    assert domain.cancel_payment(state, CancelPaymentPayload(refund_if_paid=False)).is_empty
    decision = domain.cancel_payment(state, CancelPaymentPayload(refund_if_paid=True))
    (emit,) = decision.events
    assert isinstance(emit.payload, RefundTerms)
    assert (emit.payload.amount_minor, emit.payload.initiator) == (
        1000,
        RefundInitiator.ORDER_CANCELLED,
    )
    state = apply(state, decision, "pay_1")
    assert state.status is PaymentStatus.SUCCEEDED
    assert domain.cancel_payment(state, CancelPaymentPayload(refund_if_paid=True)).is_empty


def test_an_input_naming_another_merchant_is_refused_before_any_decision() -> None:
    state = payment_requiring_payment(terms())
    domain.check_same_merchant(state, "pay_1", "mch_a")
    domain.check_same_merchant(None, "pay_new", "mch_b")  # nothing to compare with yet
    with pytest.raises(domain.ForeignMerchant, match="belongs to merchant mch_a, not mch_b"):
        domain.check_same_merchant(state, "pay_1", "mch_b")
    assert domain.ForeignMerchant.code == "merchant_mismatch"


def _risk_denied() -> domain.Payment:
    state = apply(None, domain.create_payment(None, terms()), "pay_1")
    return apply(state, domain.apply_risk_decision(state, decision_of(RiskOutcome.DENY)), "pay_1")


def _channel_rejected() -> domain.Payment:
    state = open_payment(PaymentStatus.SUBMITTING)
    rejected = ChannelPaymentRejectedPayload(
        channel=Channel.ALIPAY, failure=Failure(code="channel_unavailable", message="down")
    )
    return apply(state, domain.apply_channel_rejected(state, rejected), "pay_1")


def _expired() -> domain.Payment:
    state = open_payment(PaymentStatus.REQUIRES_PAYMENT)
    return apply(state, domain.expire_payment(state, EXPIRES_AT), "pay_1")


@pytest.mark.parametrize(
    ("closed", "status"),
    [
        (_risk_denied, PaymentStatus.FAILED),
        (_channel_rejected, PaymentStatus.FAILED),
        (_expired, PaymentStatus.EXPIRED),
    ],
)
def test_a_closed_payment_the_channel_reports_paid_is_paid_after_close_and_refunded(
    closed: Any, status: PaymentStatus
) -> None:
    state = closed()
    assert state.status is status
    late = domain.apply_channel_succeeded(state, paid())
    # Never PaymentSucceeded: the payment stays closed, the money is recorded and owed back.
    assert [emit.event_type for emit in late.events] == [PaymentPaidAfterClose, RefundRequested]
    assert [send.command_type for send in late.commands] == [SubmitChannelRefund]
    state = apply(state, late, "pay_1")
    assert state.status is status and state.paid_after_close
    assert domain.apply_channel_succeeded(state, paid()).is_empty


def _refund_failed(state: domain.Payment, refund_id: str) -> domain.Payment:
    failed = ChannelRefundFailedPayload(
        refund_id=refund_id,
        channel=Channel.ALIPAY,
        failure=Failure(code="channel_refund_refused", message="try later"),
    )
    return apply(state, domain.apply_channel_refund_failed(state, failed), "pay_1")


def test_a_refused_automatic_refund_is_tried_again_under_new_ids_up_to_the_limit() -> None:
    state = open_payment(PaymentStatus.REQUIRES_PAYMENT)
    state = apply(state, domain.cancel_payment(state, CancelPaymentPayload()), "pay_1")
    state = apply(state, domain.apply_channel_succeeded(state, paid()), "pay_1")
    (first,) = state.refunds
    assert first.terms.initiator is RefundInitiator.PAID_AFTER_CLOSE
    # Not failed yet: nothing to retry.
    assert domain.retry_automatic_refund(state, first.terms.refund_id, attempts_max=3).is_empty
    refund_id = first.terms.refund_id
    for attempt in (2, 3):
        state = _refund_failed(state, refund_id)
        retry = domain.retry_automatic_refund(state, refund_id, attempts_max=3)
        assert [emit.event_type for emit in retry.events] == [RefundRequested]
        assert [send.command_type for send in retry.commands] == [SubmitChannelRefund]
        terms = retry.events[0].payload
        assert isinstance(terms, RefundTerms)
        assert terms.refund_id == f"{first.terms.refund_id}_r{attempt}"
        assert (terms.amount_minor, terms.initiator) == (1999, RefundInitiator.PAID_AFTER_CLOSE)
        assert domain.automatic_refund_attempt(terms.refund_id) == attempt
        state = apply(state, retry, "pay_1")
        # The same failure seen again asks for no second retry.
        assert domain.retry_automatic_refund(state, refund_id, attempts_max=3).is_empty
        refund_id = terms.refund_id
    # The third attempt fails too: the attempts are used up (operations are told).
    state = _refund_failed(state, refund_id)
    assert domain.retry_automatic_refund(state, refund_id, attempts_max=3).is_empty
    assert state.refundable_amount_minor == 1999


def test_a_refused_merchant_refund_is_not_tried_again() -> None:
    state = open_payment(PaymentStatus.REQUIRES_PAYMENT)
    state = apply(state, domain.apply_channel_succeeded(state, paid()), "pay_1")
    state = apply(state, domain.request_refund(state, RefundRequest(refund_id="re_m")), "pay_1")
    state = _refund_failed(state, "re_m")
    assert domain.retry_automatic_refund(state, "re_m", attempts_max=5).is_empty
