"""The payment aggregate: state rebuilt from its events, and pure decisions.

Status flow (one term per concept):

    awaiting_risk --approve--> submitting --channel prepared--> requires_payment --paid--> succeeded
          |                        |                                   |
          +--deny--> failed        +--channel rejected--> failed       +--(failure)--> failed

Every decision is a pure function of the current state and one input; it returns a
`Decision` (events to record, commands to send). Repeating an input that was already
applied decides nothing, which makes redelivery harmless even before the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from schemas import Event
from schemas.channels import (
    ChannelPaymentPreparedPayload,
    ChannelPaymentRejectedPayload,
    ChannelPaymentSucceededPayload,
    SubmitChannelPayment,
    SubmitChannelPaymentPayload,
)
from schemas.common import Failure, NextAction
from schemas.payments import (
    PaymentActionRequired,
    PaymentActionRequiredPayload,
    PaymentCreated,
    PaymentFailed,
    PaymentFailedPayload,
    PaymentRiskApproved,
    PaymentRiskApprovedPayload,
    PaymentSucceeded,
    PaymentSucceededPayload,
    PaymentTerms,
)
from schemas.risk import RiskDecisionMadePayload, RiskOutcome
from services.common.decisions import NOTHING, Decision, Emit, Send


class PaymentStatus(StrEnum):
    AWAITING_RISK = "awaiting_risk"
    SUBMITTING = "submitting"
    REQUIRES_PAYMENT = "requires_payment"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED})


class PaymentError(Exception):
    """An input the payment cannot accept. `code` is stable and machine-readable."""

    code = "payment_error"


class PaymentConflict(PaymentError):
    """The payment id already exists with different terms."""

    code = "payment_conflict"


class UnknownPayment(PaymentError):
    """An input for a payment that was never created."""

    code = "unknown_payment"


class ChannelAmountMismatch(PaymentError):
    """The channel reports a paid amount or currency that differs from the payment's."""

    code = "channel_amount_mismatch"


@dataclass(frozen=True)
class Payment:
    payment_id: str
    merchant_id: str
    version: int
    status: PaymentStatus
    terms: PaymentTerms
    channel_trade_id: str | None = None
    next_action: NextAction | None = None
    failure: Failure | None = None


def evolve(state: Payment | None, event: Event) -> Payment:
    """Apply one recorded event. Unknown event types are a programming error."""
    if isinstance(event, PaymentCreated):
        return Payment(
            payment_id=event.aggregate_id,
            merchant_id=event.merchant_id,
            version=event.aggregate_version,
            status=PaymentStatus.AWAITING_RISK,
            terms=event.payload,
        )
    if state is None:
        raise ValueError(f"{event.event_type} before PaymentCreated on {event.aggregate_id}")
    state = replace(state, version=event.aggregate_version)
    if isinstance(event, PaymentRiskApproved):
        return replace(state, status=PaymentStatus.SUBMITTING)
    if isinstance(event, PaymentActionRequired):
        return replace(
            state,
            status=PaymentStatus.REQUIRES_PAYMENT,
            channel_trade_id=event.payload.channel_trade_id,
            next_action=event.payload.next_action,
        )
    if isinstance(event, PaymentSucceeded):
        return replace(
            state,
            status=PaymentStatus.SUCCEEDED,
            channel_trade_id=event.payload.channel_trade_id,
            next_action=None,
        )
    if isinstance(event, PaymentFailed):
        return replace(
            state, status=PaymentStatus.FAILED, failure=event.payload.failure, next_action=None
        )
    raise ValueError(f"payment cannot apply {event.event_type}")


def replay(events: list[Event]) -> Payment | None:
    state: Payment | None = None
    for event in events:
        state = evolve(state, event)
    return state


def create_payment(state: Payment | None, terms: PaymentTerms) -> Decision:
    """Create the payment, or nothing when the same payment was already created.

    Raises PaymentConflict when the id exists with other terms.
    """
    if state is not None:
        if state.terms != terms:
            raise PaymentConflict(f"payment {state.payment_id} exists with different terms")
        return NOTHING
    return Decision(events=(Emit(PaymentCreated, terms),))


def _fail(state: Payment, failure: Failure) -> Decision:
    payload = PaymentFailedPayload(**state.terms.model_dump(), failure=failure)
    return Decision(events=(Emit(PaymentFailed, payload),))


def apply_risk_decision(state: Payment | None, decision: RiskDecisionMadePayload) -> Decision:
    """Approve sends the payment to its channel; deny fails it with the rules that fired.

    A review outcome keeps the payment awaiting risk until a reviewer decides.
    Raises UnknownPayment when the payment does not exist.
    """
    if state is None:
        raise UnknownPayment(f"risk decision for unknown payment {decision.payment_id}")
    if state.status is not PaymentStatus.AWAITING_RISK:
        return NOTHING
    if decision.outcome is RiskOutcome.APPROVE:
        terms = state.terms
        submit = SubmitChannelPaymentPayload(
            channel=terms.channel,
            order_id=terms.order_id,
            amount_minor=terms.amount_minor,
            currency=terms.currency,
            description=terms.description,
        )
        return Decision(
            events=(
                Emit(PaymentRiskApproved, PaymentRiskApprovedPayload(risk_score=decision.score)),
            ),
            commands=(Send(SubmitChannelPayment, submit, aggregate_id=state.payment_id),),
        )
    if decision.outcome is RiskOutcome.DENY:
        reasons = "; ".join(rule.reason for rule in decision.fired_rules) or "declined by risk"
        return _fail(
            state,
            Failure(
                code="risk_declined",
                message=reasons,
                rule_ids=tuple(rule.rule_id for rule in decision.fired_rules),
            ),
        )
    return NOTHING


def apply_channel_prepared(
    state: Payment | None, prepared: ChannelPaymentPreparedPayload
) -> Decision:
    if state is None:
        raise UnknownPayment("channel prepared a trade for an unknown payment")
    if state.status is not PaymentStatus.SUBMITTING:
        return NOTHING
    payload = PaymentActionRequiredPayload(
        channel_trade_id=prepared.channel_trade_id, next_action=prepared.next_action
    )
    return Decision(events=(Emit(PaymentActionRequired, payload),))


def apply_channel_rejected(
    state: Payment | None, rejected: ChannelPaymentRejectedPayload
) -> Decision:
    if state is None:
        raise UnknownPayment("channel rejected an unknown payment")
    if state.status is not PaymentStatus.SUBMITTING:
        return NOTHING
    return _fail(state, rejected.failure)


def apply_channel_succeeded(
    state: Payment | None, paid: ChannelPaymentSucceededPayload
) -> Decision:
    """Record the success once; a duplicate or out-of-order notification decides nothing.

    Raises UnknownPayment, or ChannelAmountMismatch when the channel's amount or
    currency differs from the payment's (never silently accepted).
    """
    if state is None:
        raise UnknownPayment("channel success for an unknown payment")
    terms = state.terms
    if (paid.amount_minor, paid.currency) != (terms.amount_minor, terms.currency):
        raise ChannelAmountMismatch(
            f"{state.payment_id}: channel paid {paid.amount_minor} {paid.currency},"
            f" payment is {terms.amount_minor} {terms.currency}"
        )
    if state.status in TERMINAL_STATUSES:
        # A success after a failure is money received for a closed payment; the
        # automatic refund of such late payments is a later piece of work.
        return NOTHING
    payload = PaymentSucceededPayload(
        **terms.model_dump(), channel_trade_id=paid.channel_trade_id, paid_at=paid.paid_at
    )
    return Decision(events=(Emit(PaymentSucceeded, payload),))
