"""Property-based tests of the ledger's posting rules over random histories of payments,
partial refunds, splits to another merchant, late payments, settlements, payouts, payout
failures, adjustments and their reversals, and redelivered
events: every entry balances, every currency sums to zero, no event is posted twice, a
rebuild from the log equals the balances built one event at a time, and each merchant's
pending, available and in-transit balances are what the history says."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from fractions import Fraction

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from schemas import Event, new_event
from schemas.common import Channel, Failure, FeePlan
from schemas.ledger import (
    AdjustmentPosted,
    AdjustmentPostedPayload,
    SettlementCreated,
    SettlementCreatedPayload,
    SettlementLine,
)
from schemas.payments import (
    PaymentPaidAfterClose,
    PaymentPaidAfterClosePayload,
    PaymentSucceeded,
    PaymentSucceededPayload,
    Split,
)
from schemas.payouts import (
    PayoutCreated,
    PayoutCreatedPayload,
    PayoutFailed,
    PayoutFailedPayload,
    PayoutPaid,
    PayoutPaidPayload,
)
from schemas.refunds import RefundInitiator, RefundSucceeded, RefundSucceededPayload
from services.ledger.domain import check_balanced, fee_for
from services.ledger.payout_rules import payout_amount
from services.ledger.rebuild import REPLAY_RULES, project_balances

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MERCHANTS = ("mch_a", "mch_b")
CURRENCIES = ("CNY", "JPY")


def _event(cls: type[Event], payload: object, aggregate_id: str, merchant_id: str) -> Event:
    return new_event(
        cls,
        payload,  # type: ignore[arg-type]
        aggregate_id=aggregate_id,
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


@dataclass
class Payout:
    merchant_id: str
    currency: str
    amount_minor: int
    closed: bool = False


class LedgerHistory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[Event] = []
        self.live: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.posted: set[uuid.UUID] = set()
        self.entry_count = 0
        self.without_entry: set[uuid.UUID] = set()
        self.payments: dict[str, PaidPayment] = {}
        self.expected_pending: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.expected_available: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.expected_in_transit: defaultdict[tuple[str, str], int] = defaultdict(int)
        # What each merchant's unsettled entries change, as settlement lines would say.
        self.unsettled: defaultdict[tuple[str, str], list[tuple[Event, int]]] = defaultdict(list)
        self.payouts: dict[str, Payout] = {}
        self.paid_payouts: set[str] = set()
        self.adjustments: dict[str, tuple[str, str, int]] = {}  # not reversed yet

    def _deliver(self, event: Event) -> None:
        """What the live ledger does with one delivery: post once per event id."""
        self.log.append(event)
        if event.event_id in self.posted:
            return
        self.posted.add(event.event_id)
        postings = REPLAY_RULES[type(event)][1](event)
        if not postings:
            self.without_entry.add(event.event_id)  # a settlement netting to zero
            return
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
        share=st.fractions(min_value=0, max_value=1),
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
        share: Fraction,
    ) -> None:
        """A payment; part of what it leaves after the fee may go to the other merchant
        (a marketplace split)."""
        payment_id = f"pay_{uuid.uuid4().hex}"
        plan = FeePlan(basis_points=basis_points, fixed_minor_by_currency={currency: fixed})
        net = amount - fee_for(amount, currency, plan)
        recipient = next(other for other in MERCHANTS if other != merchant)
        shared = int(net * share)
        splits = (Split(recipient_id=recipient, amount_minor=shared),) if shared else ()
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
            payload = PaymentSucceededPayload(**fields, splits=splits)
            event = _event(PaymentSucceeded, payload, payment_id, merchant)
            self._deliver(event)
            for party, owed in ((merchant, net - shared), (recipient, shared)):
                self.expected_pending[(party, currency)] += owed
                if owed:
                    self.unsettled[(party, currency)].append((event, owed))
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
        event = _event(RefundSucceeded, payload, payment_id, paid.merchant_id)
        self._deliver(event)
        paid.refunded_minor += part
        if not paid.late:
            self.expected_pending[(paid.merchant_id, paid.currency)] -= part
            self.unsettled[(paid.merchant_id, paid.currency)].append((event, -part))

    @precondition(lambda self: any(self.unsettled.values()))
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        """A settlement batch of every unsettled entry of one merchant and currency (its
        net may be negative: refunds after earlier settlements)."""
        key = data.draw(st.sampled_from([key for key, lines in self.unsettled.items() if lines]))
        merchant, currency = key
        lines = self.unsettled.pop(key)
        net = sum(amount for _, amount in lines)
        batch_id = f"stl_{uuid.uuid4().hex}"
        payload = SettlementCreatedPayload(
            batch_id=batch_id,
            currency=currency,
            settlement_date=date(2026, 11, 23),
            net_minor=net,
            lines=tuple(
                SettlementLine(
                    entry_id=f"je_{event.event_id.hex}",
                    kind="payment_succeeded",
                    source_event_id=str(event.event_id),
                    amount_minor=amount,
                )
                for event, amount in lines
            ),
        )
        self._deliver(_event(SettlementCreated, payload, batch_id, merchant))
        self.expected_pending[key] -= net
        self.expected_available[key] += net

    @rule(
        merchant=st.sampled_from(MERCHANTS),
        currency=st.sampled_from(CURRENCIES),
        minimum=st.integers(min_value=1, max_value=10**6),
    )
    def pay_out(self, merchant: str, currency: str, minimum: int) -> None:
        amount = payout_amount(self.expected_available[(merchant, currency)], minimum)
        if amount is None:
            return
        payout_id = f"po_{uuid.uuid4().hex}"
        payload = PayoutCreatedPayload(
            payout_id=payout_id, currency=currency, amount_minor=amount, payout_date=NOW.date()
        )
        self._deliver(_event(PayoutCreated, payload, payout_id, merchant))
        self.payouts[payout_id] = Payout(merchant, currency, amount)
        self.expected_available[(merchant, currency)] -= amount
        self.expected_in_transit[(merchant, currency)] += amount

    @rule(
        merchant=st.sampled_from(MERCHANTS),
        currency=st.sampled_from(CURRENCIES),
        amount=st.integers(min_value=-(10**6), max_value=10**6).filter(bool),
    )
    def adjust(self, merchant: str, currency: str, amount: int) -> None:
        """Operations correct an available balance (either way)."""
        adjustment_id = f"adj_{uuid.uuid4().hex}"
        payload = AdjustmentPostedPayload(
            adjustment_id=adjustment_id, currency=currency, amount_minor=amount, reason="r"
        )
        self._deliver(_event(AdjustmentPosted, payload, adjustment_id, merchant))
        self.adjustments[adjustment_id] = (merchant, currency, amount)
        self.expected_available[(merchant, currency)] += amount

    @precondition(lambda self: self.adjustments)
    @rule(data=st.data())
    def reverse_adjustment(self, data: st.DataObject) -> None:
        """A mistaken adjustment is reversed by the opposite one, never edited."""
        original = data.draw(st.sampled_from(list(self.adjustments)))
        merchant, currency, amount = self.adjustments.pop(original)
        reversal_id = f"adj_{uuid.uuid4().hex}"
        payload = AdjustmentPostedPayload(
            adjustment_id=reversal_id,
            currency=currency,
            amount_minor=-amount,
            reason="r",
            reverses=original,
        )
        self._deliver(_event(AdjustmentPosted, payload, reversal_id, merchant))
        self.expected_available[(merchant, currency)] -= amount

    @precondition(lambda self: any(not payout.closed for payout in self.payouts.values()))
    @rule(data=st.data(), paid=st.booleans())
    def bank_answers(self, data: st.DataObject, paid: bool) -> None:
        """The bank pays a payout in transit, or fails it and the money comes back."""
        open_ids = [payout_id for payout_id, payout in self.payouts.items() if not payout.closed]
        payout_id = data.draw(st.sampled_from(open_ids))
        payout = self.payouts[payout_id]
        payout.closed = True
        key = (payout.merchant_id, payout.currency)
        self.expected_in_transit[key] -= payout.amount_minor
        if paid:
            paid_payload = PayoutPaidPayload(
                payout_id=payout_id,
                currency=payout.currency,
                amount_minor=payout.amount_minor,
                bank_reference="bnk",
            )
            self._deliver(_event(PayoutPaid, paid_payload, payout_id, payout.merchant_id))
            self.paid_payouts.add(payout_id)
        else:
            failed_payload = PayoutFailedPayload(
                payout_id=payout_id,
                currency=payout.currency,
                amount_minor=payout.amount_minor,
                failure=Failure(code="bank_account_closed", message="closed"),
            )
            self._deliver(_event(PayoutFailed, failed_payload, payout_id, payout.merchant_id))
            self.expected_available[key] += payout.amount_minor

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
        distinct = {event.event_id for event in self.log}
        assert self.entry_count + len(self.without_entry) == len(distinct)

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
    def settled_money_is_available_until_paid_out(self) -> None:
        for bucket, expected in (
            ("available", self.expected_available),
            ("payouts_in_transit", self.expected_in_transit),
        ):
            for (merchant, currency), amount in expected.items():
                balance = self.live.get((f"merchant:{merchant}:{bucket}", currency), 0)
                assert -balance == amount, (bucket, merchant, currency)

    @invariant()
    def the_bank_paid_exactly_the_paid_payouts(self) -> None:
        for currency in CURRENCIES:
            paid = sum(
                payout.amount_minor
                for payout_id, payout in self.payouts.items()
                if payout.currency == currency and payout_id in self.paid_payouts
            )
            assert -self.live.get(("platform:payouts_bank", currency), 0) == paid

    @invariant()
    def late_money_is_owed_to_payers_until_refunded(self) -> None:
        owed: defaultdict[str, int] = defaultdict(int)
        for paid in self.payments.values():
            if paid.late:
                owed[paid.currency] += paid.amount_minor - paid.refunded_minor
        for currency in CURRENCIES:
            clearing = self.live.get(("platform:refunds_clearing", currency), 0)
            assert -clearing == owed[currency]


LedgerHistory.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_ledger_history = LedgerHistory.TestCase
