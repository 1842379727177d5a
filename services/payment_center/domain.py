"""The payment aggregate: state rebuilt from its events, and pure decisions.

Status flow (one term per concept):

    awaiting_risk --approve--> submitting --channel prepared--> requires_payment --paid--> succeeded
          |                        |                                   |
          +--deny--> failed        +--channel rejected--> failed       |
          |                        |                                   |
          +------------------------+--- cancel --> canceled -----------+
          +------------------------+--- expiry --> expired ------------+

Canceling or expiring a payment that reached the channel also closes the channel's trade.

Refunds live inside the payment (its stream records them), so the refundable amount is
decided under the payment's optimistic concurrency: the paid amount minus every refund
that is requested or succeeded. A refund is `requested` until the channel's result makes
it `succeeded` or `failed`; a failed refund frees its amount again. Money that arrives for
a closed payment (`PaymentPaidAfterClose`) is refunded in full at once.

Every decision is a pure function of the current state and one input; it returns a
`Decision` (events to record, commands to send). Repeating an input that was already
applied decides nothing, which makes redelivery harmless even before the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from schemas import Event
from schemas.channels import (
    ChannelPaymentPreparedPayload,
    ChannelPaymentRejectedPayload,
    ChannelPaymentSucceededPayload,
    CloseChannelTrade,
    CloseChannelTradePayload,
    SubmitChannelPayment,
    SubmitChannelPaymentPayload,
)
from schemas.common import Failure, NextAction
from schemas.operations import ChannelDiscrepancyRecordedPayload
from schemas.payments import (
    CancelPaymentPayload,
    PaymentActionRequired,
    PaymentActionRequiredPayload,
    PaymentCanceled,
    PaymentCanceledPayload,
    PaymentCreated,
    PaymentExpired,
    PaymentFailed,
    PaymentFailedPayload,
    PaymentHeldForReview,
    PaymentHeldForReviewPayload,
    PaymentPaidAfterClose,
    PaymentPaidAfterClosePayload,
    PaymentRequest,
    PaymentRiskApproved,
    PaymentRiskApprovedPayload,
    PaymentSucceeded,
    PaymentSucceededPayload,
    PaymentTerms,
)
from schemas.refunds import (
    ChannelRefundFailedPayload,
    ChannelRefundSucceededPayload,
    RefundFailed,
    RefundFailedPayload,
    RefundInitiator,
    RefundRefused,
    RefundRefusedPayload,
    RefundRequest,
    RefundRequested,
    RefundSucceeded,
    RefundSucceededPayload,
    RefundTerms,
    SubmitChannelRefund,
    SubmitChannelRefundPayload,
    derived_refund_id,
)
from schemas.risk import RiskDecisionMadePayload, RiskOutcome
from services.common.decisions import NOTHING, Decision, Emit, Send


class PaymentStatus(StrEnum):
    AWAITING_RISK = "awaiting_risk"
    SUBMITTING = "submitting"
    REQUIRES_PAYMENT = "requires_payment"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED}
)
# Unpaid and still open: the statuses a cancel or the expiry can end.
OPEN_STATUSES = frozenset(
    {PaymentStatus.AWAITING_RISK, PaymentStatus.SUBMITTING, PaymentStatus.REQUIRES_PAYMENT}
)
# The channel may hold a trade for the payment once it was submitted.
AT_CHANNEL_STATUSES = frozenset({PaymentStatus.SUBMITTING, PaymentStatus.REQUIRES_PAYMENT})


class PaymentError(Exception):
    """An input the payment cannot accept. `code` is stable and machine-readable."""

    code = "payment_error"


class PaymentConflict(PaymentError):
    """The payment id already exists with different terms."""

    code = "payment_conflict"


class ForeignMerchant(PaymentError):
    """An input that names another merchant than the payment's: forged, or misrouted."""

    code = "merchant_mismatch"


def check_same_merchant(state: Payment | None, payment_id: str, merchant_id: str) -> None:
    """Raise ForeignMerchant when `state` is a payment of another merchant than
    `merchant_id`. Nothing is checked for a payment that does not exist yet."""
    if state is not None and state.merchant_id != merchant_id:
        raise ForeignMerchant(
            f"{payment_id} belongs to merchant {state.merchant_id}, not {merchant_id}"
        )


class UnknownPayment(PaymentError):
    """An input for a payment that was never created."""

    code = "unknown_payment"


class ChannelAmountMismatch(PaymentError):
    """The channel reports a paid amount or currency that differs from the payment's.
    `discrepancy` is what operations (and reconciliation) are told."""

    code = "channel_amount_mismatch"

    def __init__(self, message: str, discrepancy: ChannelDiscrepancyRecordedPayload) -> None:
        super().__init__(message)
        self.discrepancy = discrepancy


class UnknownRefund(PaymentError):
    """A channel result for a refund the payment never requested."""

    code = "unknown_refund"


class RefundResultConflict(PaymentError):
    """The channel reports a result that contradicts the refund's recorded final result."""

    code = "refund_result_conflict"


class RefundStatus(StrEnum):
    REQUESTED = "requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Refunds whose amount is no longer refundable: in flight or done.
HOLDING_REFUND_STATUSES = frozenset({RefundStatus.REQUESTED, RefundStatus.SUCCEEDED})


@dataclass(frozen=True)
class Refund:
    terms: RefundTerms
    status: RefundStatus


@dataclass(frozen=True)
class Payment:
    payment_id: str
    merchant_id: str
    version: int
    status: PaymentStatus
    terms: PaymentTerms
    expires_at: datetime | None = None
    request: PaymentRequest | None = None
    channel_trade_id: str | None = None
    next_action: NextAction | None = None
    failure: Failure | None = None
    paid_after_close: bool = False
    held_for_review: bool = False
    paid_amount_minor: int = 0
    refunds: tuple[Refund, ...] = ()
    refused_refund_ids: frozenset[str] = frozenset()

    def refund(self, refund_id: str) -> Refund | None:
        return next((r for r in self.refunds if r.terms.refund_id == refund_id), None)

    @property
    def refundable_amount_minor(self) -> int:
        held = sum(
            r.terms.amount_minor for r in self.refunds if r.status in HOLDING_REFUND_STATUSES
        )
        return self.paid_amount_minor - held


def terms_of(request: PaymentRequest) -> PaymentTerms:
    """The terms part of a payment request (what every later payment event repeats)."""
    return PaymentTerms.model_validate(request.model_dump(include=set(PaymentTerms.model_fields)))


def evolve(state: Payment | None, event: Event) -> Payment:
    """Apply one recorded event. Unknown event types are a programming error."""
    if isinstance(event, PaymentCreated):
        return Payment(
            payment_id=event.aggregate_id,
            merchant_id=event.merchant_id,
            version=event.aggregate_version,
            status=PaymentStatus.AWAITING_RISK,
            terms=terms_of(event.payload),
            expires_at=event.payload.expires_at,
            request=event.payload,
        )
    if state is None:
        raise ValueError(f"{event.event_type} before PaymentCreated on {event.aggregate_id}")
    state = replace(state, version=event.aggregate_version)
    if isinstance(event, PaymentRiskApproved):
        return replace(state, status=PaymentStatus.SUBMITTING)
    if isinstance(event, PaymentHeldForReview):
        return replace(state, held_for_review=True)
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
            paid_amount_minor=event.payload.amount_minor,
        )
    if isinstance(event, PaymentFailed):
        return replace(
            state, status=PaymentStatus.FAILED, failure=event.payload.failure, next_action=None
        )
    if isinstance(event, PaymentPaidAfterClose):
        return replace(state, paid_after_close=True, paid_amount_minor=event.payload.amount_minor)
    if isinstance(event, RefundRequested):
        requested = Refund(terms=event.payload, status=RefundStatus.REQUESTED)
        return replace(state, refunds=(*state.refunds, requested))
    if isinstance(event, RefundRefused):
        refused = state.refused_refund_ids | {event.payload.refund_id}
        return replace(state, refused_refund_ids=refused)
    if isinstance(event, RefundSucceeded | RefundFailed):
        final = (
            RefundStatus.SUCCEEDED if isinstance(event, RefundSucceeded) else RefundStatus.FAILED
        )
        refunds = tuple(
            replace(r, status=final) if r.terms.refund_id == event.payload.refund_id else r
            for r in state.refunds
        )
        return replace(state, refunds=refunds)
    if isinstance(event, PaymentCanceled):
        return replace(state, status=PaymentStatus.CANCELED, next_action=None)
    if isinstance(event, PaymentExpired):
        return replace(state, status=PaymentStatus.EXPIRED, next_action=None)
    raise ValueError(f"payment cannot apply {event.event_type}")


def replay(events: list[Event]) -> Payment | None:
    state: Payment | None = None
    for event in events:
        state = evolve(state, event)
    return state


def create_payment(state: Payment | None, request: PaymentRequest) -> Decision:
    """Create the payment, or nothing when the same payment was already created.

    Raises PaymentConflict when the id exists with other terms.
    """
    if state is not None:
        if state.request != request:
            raise PaymentConflict(f"payment {state.payment_id} exists with different terms")
        return NOTHING
    return Decision(events=(Emit(PaymentCreated, request),))


def _close_trade(state: Payment, reason: str) -> tuple[Send, ...]:
    if state.status not in AT_CHANNEL_STATUSES:
        return ()
    close = CloseChannelTradePayload(channel=state.terms.channel, reason=reason)
    return (Send(CloseChannelTrade, close, aggregate_id=state.payment_id),)


def cancel_payment(state: Payment | None, request: CancelPaymentPayload) -> Decision:
    """Cancel an unpaid payment and close its channel trade.

    A payment that is already over decides nothing: the caller reads its final status
    (canceled again, or too late because it succeeded, failed or expired).
    Raises UnknownPayment when the payment does not exist.
    """
    if state is None:
        raise UnknownPayment("cancel for an unknown payment")
    if state.status is PaymentStatus.SUCCEEDED and request.refund_if_paid:
        refundable = state.refundable_amount_minor
        if refundable == 0:
            return NOTHING
        refund = _refund_terms(
            state,
            refund_id=derived_refund_id(state.payment_id, RefundInitiator.ORDER_CANCELLED),
            amount_minor=refundable,
            reason=request.reason,
            initiator=RefundInitiator.ORDER_CANCELLED,
        )
        if state.refund(refund.refund_id) is not None:
            return NOTHING
        return Decision(
            events=(Emit(RefundRequested, refund),), commands=(_submit_refund(state, refund),)
        )
    if state.status not in OPEN_STATUSES:
        return NOTHING
    payload = PaymentCanceledPayload(**state.terms.model_dump(), reason=request.reason)
    return Decision(
        events=(Emit(PaymentCanceled, payload),), commands=_close_trade(state, "canceled")
    )


def expire_payment(state: Payment | None, now: datetime) -> Decision:
    """Expire a payment still unpaid at its expiry time, and close its channel trade."""
    if (
        state is None
        or state.status not in OPEN_STATUSES
        or state.expires_at is None
        or now < state.expires_at
    ):
        return NOTHING
    return Decision(
        events=(Emit(PaymentExpired, state.terms),), commands=_close_trade(state, "expired")
    )


def _fail(state: Payment, failure: Failure) -> Decision:
    payload = PaymentFailedPayload(**state.terms.model_dump(), failure=failure)
    return Decision(events=(Emit(PaymentFailed, payload),))


def apply_risk_decision(state: Payment | None, decision: RiskDecisionMadePayload) -> Decision:
    """Approve sends the payment to its channel; deny fails it with the rules that fired.

    A review outcome holds the payment (`PaymentHeldForReview`, once) until a reviewer's
    decision, which comes as the next risk decision; it may expire meanwhile.
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
    if state.held_for_review:
        return NOTHING
    held = PaymentHeldForReviewPayload(risk_score=decision.score, fired_rules=decision.fired_rules)
    return Decision(events=(Emit(PaymentHeldForReview, held),))


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
            f" payment is {terms.amount_minor} {terms.currency}",
            ChannelDiscrepancyRecordedPayload(
                payment_id=state.payment_id,
                channel=paid.channel,
                channel_reference=paid.channel_trade_id,
                notification_id=paid.notification_id,
                expected_amount_minor=terms.amount_minor,
                expected_currency=terms.currency,
                reported_amount_minor=paid.amount_minor,
                reported_currency=paid.currency,
            ),
        )
    if state.status is PaymentStatus.SUCCEEDED or state.paid_after_close:
        return NOTHING
    if state.status in TERMINAL_STATUSES:
        # The payer paid a trade that closed too late (or a closed payment was paid
        # anyway): the money is recorded, once, and refunded to the payer at once.
        late = PaymentPaidAfterClosePayload(
            **terms.model_dump(),
            channel_trade_id=paid.channel_trade_id,
            paid_at=paid.paid_at,
            closed_status=state.status.value,
        )
        refund = _refund_terms(
            state,
            refund_id=derived_refund_id(state.payment_id, RefundInitiator.PAID_AFTER_CLOSE),
            amount_minor=terms.amount_minor,
            reason=f"paid after the payment was {state.status.value}",
            initiator=RefundInitiator.PAID_AFTER_CLOSE,
        )
        return Decision(
            events=(Emit(PaymentPaidAfterClose, late), Emit(RefundRequested, refund)),
            commands=(_submit_refund(state, refund),),
        )
    payload = PaymentSucceededPayload(
        **terms.model_dump(), channel_trade_id=paid.channel_trade_id, paid_at=paid.paid_at
    )
    return Decision(events=(Emit(PaymentSucceeded, payload),))


def _refund_terms(
    state: Payment,
    *,
    refund_id: str,
    amount_minor: int,
    reason: str,
    initiator: RefundInitiator,
) -> RefundTerms:
    return RefundTerms(
        refund_id=refund_id,
        amount_minor=amount_minor,
        currency=state.terms.currency,
        channel=state.terms.channel,
        reason=reason,
        initiator=initiator,
        order_id=state.terms.order_id,
    )


def _submit_refund(state: Payment, refund: RefundTerms) -> Send:
    submit = SubmitChannelRefundPayload(
        refund_id=refund.refund_id,
        channel=refund.channel,
        amount_minor=refund.amount_minor,
        currency=refund.currency,
        reason=refund.reason,
    )
    return Send(SubmitChannelRefund, submit, aggregate_id=state.payment_id)


def request_refund(state: Payment | None, request: RefundRequest) -> Decision:
    """Accept a refund against what is still refundable, or record why it is refused.

    A refund id seen before (accepted or refused) decides nothing, so a retried request
    never refunds twice. Refusal codes: `payment_not_paid` (nothing was paid) and
    `refund_exceeds_captured` (more than the paid amount minus refunds requested or
    succeeded). Raises UnknownPayment when the payment does not exist.
    """
    if state is None:
        raise UnknownPayment("refund for an unknown payment")
    if state.refund(request.refund_id) is not None or request.refund_id in state.refused_refund_ids:
        return NOTHING
    refundable = state.refundable_amount_minor
    amount = request.amount_minor if request.amount_minor is not None else refundable
    failure: Failure | None = None
    if state.status is not PaymentStatus.SUCCEEDED:
        failure = Failure(
            code="payment_not_paid", message=f"the payment is {state.status.value}, not paid"
        )
    elif amount <= 0 or amount > refundable:
        failure = Failure(
            code="refund_exceeds_captured",
            message=f"{request.amount_minor or 'the rest'} exceeds the refundable"
            f" {refundable} {state.terms.currency}",
        )
    if failure is not None:
        refused = RefundRefusedPayload(
            refund_id=request.refund_id,
            requested_amount_minor=request.amount_minor,
            refundable_amount_minor=max(refundable, 0),
            failure=failure,
        )
        return Decision(events=(Emit(RefundRefused, refused),))
    refund = _refund_terms(
        state,
        refund_id=request.refund_id,
        amount_minor=amount,
        reason=request.reason,
        initiator=request.initiator,
    )
    return Decision(
        events=(Emit(RefundRequested, refund),), commands=(_submit_refund(state, refund),)
    )


def _requested_refund(state: Payment | None, refund_id: str) -> Refund:
    if state is None:
        raise UnknownPayment("refund result for an unknown payment")
    refund = state.refund(refund_id)
    if refund is None:
        raise UnknownRefund(f"{state.payment_id} has no refund {refund_id}")
    return refund


def apply_channel_refund_succeeded(
    state: Payment | None, result: ChannelRefundSucceededPayload
) -> Decision:
    """Record the refund's success once. Raises UnknownRefund, ChannelAmountMismatch, or
    RefundResultConflict when the refund was already recorded as failed."""
    refund = _requested_refund(state, result.refund_id)
    terms = refund.terms
    if (result.amount_minor, result.currency) != (terms.amount_minor, terms.currency):
        raise ChannelAmountMismatch(
            f"refund {terms.refund_id}: channel refunded {result.amount_minor}"
            f" {result.currency}, requested {terms.amount_minor} {terms.currency}",
            ChannelDiscrepancyRecordedPayload(
                payment_id=state.payment_id if state else "",
                refund_id=terms.refund_id,
                channel=result.channel,
                channel_reference=result.channel_refund_id,
                notification_id=result.notification_id,
                expected_amount_minor=terms.amount_minor,
                expected_currency=terms.currency,
                reported_amount_minor=result.amount_minor,
                reported_currency=result.currency,
            ),
        )
    if refund.status is RefundStatus.SUCCEEDED:
        return NOTHING
    if refund.status is RefundStatus.FAILED:
        raise RefundResultConflict(f"refund {terms.refund_id} failed, channel now says succeeded")
    payload = RefundSucceededPayload(
        **terms.model_dump(),
        channel_refund_id=result.channel_refund_id,
        succeeded_at=result.succeeded_at,
    )
    return Decision(events=(Emit(RefundSucceeded, payload),))


def apply_channel_refund_failed(
    state: Payment | None, result: ChannelRefundFailedPayload
) -> Decision:
    """Record the refund's failure once (its amount becomes refundable again). A failure
    reported after a success is a conflict (RefundResultConflict), never applied."""
    refund = _requested_refund(state, result.refund_id)
    if refund.status is RefundStatus.FAILED:
        return NOTHING
    if refund.status is RefundStatus.SUCCEEDED:
        raise RefundResultConflict(
            f"refund {refund.terms.refund_id} succeeded, channel now says failed"
        )
    payload = RefundFailedPayload(**refund.terms.model_dump(), failure=result.failure)
    return Decision(events=(Emit(RefundFailed, payload),))


# Refunds payrail starts by itself: the money is the payer's, so a refusal is not the end.
AUTOMATIC_REFUND_INITIATORS = frozenset(
    {RefundInitiator.ORDER_CANCELLED, RefundInitiator.PAID_AFTER_CLOSE}
)


def automatic_refund_attempt(refund_id: str) -> int:
    """Which attempt of an automatic refund `refund_id` is: 1 for the derived id, n for
    its `_r<n>` retries."""
    _base, separator, attempt = refund_id.rpartition("_r")
    return int(attempt) if separator and attempt.isdigit() else 1


def retry_automatic_refund(
    state: Payment | None, failed_refund_id: str, *, attempts_max: int
) -> Decision:
    """Try again an automatic refund the channel refused: a new refund (id
    `<first id>_r<n>`) of what is still refundable, up to `attempts_max` attempts in all.

    Decides nothing when the refund did not fail, is not automatic, its attempts are used
    up, a later attempt exists already, or nothing is left to refund.
    Raises UnknownPayment or UnknownRefund for a refund never requested.
    """
    failed = _requested_refund(state, failed_refund_id)
    if state is None:  # _requested_refund raised already; this narrows the type
        raise UnknownPayment("refund retry for an unknown payment")
    terms = failed.terms
    attempt = automatic_refund_attempt(terms.refund_id)
    if (
        failed.status is not RefundStatus.FAILED
        or terms.initiator not in AUTOMATIC_REFUND_INITIATORS
        or attempt >= attempts_max
    ):
        return NOTHING
    first_id = terms.refund_id if attempt == 1 else terms.refund_id.rpartition("_r")[0]
    next_id = f"{first_id}_r{attempt + 1}"
    amount_minor = min(terms.amount_minor, state.refundable_amount_minor)
    if state.refund(next_id) is not None or amount_minor <= 0:
        return NOTHING
    refund = _refund_terms(
        state,
        refund_id=next_id,
        amount_minor=amount_minor,
        reason=terms.reason,
        initiator=terms.initiator,
    )
    return Decision(
        events=(Emit(RefundRequested, refund),), commands=(_submit_refund(state, refund),)
    )
