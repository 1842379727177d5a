"""Property-based tests of the ledger's posting rules over random histories of payments,
partial refunds, late payments and redelivered events: every entry balances, every
currency sums to zero, no event is posted twice, and a rebuild from the log equals the
balances built one event at a time."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from schemas import Event, new_event
from schemas.common import Channel, FeePlan
from schemas.payments import (
    PaymentPaidAfterClose,
    PaymentPaidAfterClosePayload,
    PaymentSucceeded,
    PaymentSucceededPayload,
)
from schemas.refunds import RefundInitiator, RefundSucceeded, RefundSucceededPayload
from services.ledger.domain import ENTRY_RULES, check_balanced, fee_for
from services.ledger.rebuild import project_balances

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MERCHANTS = ("mch_a", "mch_b")
CURRENCIES = ("CNY", "JPY")


def _event(cls: type[Event], payload: object, payment_id: str, merchant_id: str) -> Event:
    return new_event(
        cls,
        payload,  # type: ignore[arg-type]
        aggregate_id=payment_id,
        aggregate_version=1,
        merchant_id=merchant_id,
        producer="test",
        occurred_at=NOW,
        correlation_id="corr",
        causation_id=None,
    )


@dataclass
class PaidPayment:
    merchant_id: str
    currency: str
    channel: Channel
    amount_minor: int
    late: bool  # paid after it closed: owed back to the payer, refunded in full
    refunded_minor: int = 0


class LedgerHistory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[Event] = []
        self.live: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.posted: set[uuid.UUID] = set()
        self.entry_count = 0
        self.payments: dict[str, PaidPayment] = {}
        self.expected_pending: defaultdict[tuple[str, str], int] = defaultdict(int)

    def _deliver(self, event: Event) -> None:
        """What the live ledger does with one delivery: post once per event id."""
        self.log.append(event)
        if event.event_id in self.posted:
            return
        self.posted.add(event.event_id)
        postings = ENTRY_RULES[type(event)][1](event)
        check_balanced(postings)
        self.entry_count += 1
        for posting in postings:
            self.live[(posting.account_id, posting.currency)] += posting.amount_minor

    @rule(
        merchant=st.sampled_from(MERCHANTS),
        currency=st.sampled_from(CURRENCIES),
        channel=st.sampled_from(list(Channel)),
        amount=st.integers(min_value=1, max_value=10**9),
        basis_points=st.integers(min_value=0, max_value=10_000),
        fixed=st.integers(min_value=0, max_value=500),
        late=st.booleans(),
    )
    def pay(
        self,
        merchant: str,
        currency: str,
        channel: Channel,
        amount: int,
        basis_points: int,
        fixed: int,
        late: bool,
    ) -> None:
        payment_id = f"pay_{uuid.uuid4().hex}"
        plan = FeePlan(basis_points=basis_points, fixed_minor=fixed)
        fields = {
            "order_id": "o",
            "amount_minor": amount,
            "currency": currency,
            "channel": channel,
            "fee_plan": plan,
            "channel_trade_id": "t",
            "paid_at": NOW,
        }
        if late:
            payload: object = PaymentPaidAfterClosePayload(**fields, closed_status="expired")
            self._deliver(_event(PaymentPaidAfterClose, payload, payment_id, merchant))
        else:
            payload = PaymentSucceededPayload(**fields)
            self._deliver(_event(PaymentSucceeded, payload, payment_id, merchant))
            self.expected_pending[(merchant, currency)] += amount - fee_for(amount, plan)
        self.payments[payment_id] = PaidPayment(merchant, currency, channel, amount, late)

    @precondition(lambda self: self.payments)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        payment_id = data.draw(st.sampled_from(list(self.payments)))
        paid = self.payments[payment_id]
        left = paid.amount_minor - paid.refunded_minor
        if left == 0:
            return
        part = left if paid.late else data.draw(st.integers(min_value=1, max_value=left))
        payload = RefundSucceededPayload(
            refund_id=f"re_{uuid.uuid4().hex}",
            amount_minor=part,
            currency=paid.currency,
            channel=paid.channel,
            reason="r",
            initiator=RefundInitiator.PAID_AFTER_CLOSE if paid.late else RefundInitiator.MERCHANT,
            order_id="o",
            channel_refund_id="R",
            succeeded_at=NOW,
        )
        self._deliver(_event(RefundSucceeded, payload, payment_id, paid.merchant_id))
        paid.refunded_minor += part
        if not paid.late:
            self.expected_pending[(paid.merchant_id, paid.currency)] -= part

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        self._deliver(data.draw(st.sampled_from(self.log)))

    @invariant()
    def every_currency_sums_to_zero(self) -> None:
        totals: defaultdict[str, int] = defaultdict(int)
        for (_, currency), balance in self.live.items():
            totals[currency] += balance
        assert all(total == 0 for total in totals.values())

    @invariant()
    def no_event_is_posted_twice(self) -> None:
        assert self.entry_count == len({event.event_id for event in self.log})

    @invariant()
    def a_rebuild_from_the_log_equals_the_live_balances(self) -> None:
        rebuilt = project_balances(self.log)
        keys = rebuilt.keys() | self.live.keys()
        assert all(rebuilt.get(key, 0) == self.live.get(key, 0) for key in keys)

    @invariant()
    def merchants_are_owed_payments_less_fees_less_refunds(self) -> None:
        for (merchant, currency), expected in self.expected_pending.items():
            assert -self.live.get((f"merchant:{merchant}:pending", currency), 0) == expected

    @invariant()
    def late_money_is_owed_to_payers_until_refunded(self) -> None:
        owed: defaultdict[str, int] = defaultdict(int)
        for paid in self.payments.values():
            if paid.late:
                owed[paid.currency] += paid.amount_minor - paid.refunded_minor
        for currency in CURRENCIES:
            clearing = self.live.get(("platform:refunds_clearing", currency), 0)
            assert -clearing == owed[currency]


LedgerHistory.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_ledger_history = LedgerHistory.TestCase
