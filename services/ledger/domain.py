"""The ledger's pure rules: fees, account names and the journal entry of each business fact.

This module imports only the standard library and `schemas` (plus the stdlib-only
`invariant` helper): no database, broker or logger, so every rule here is tested in
microseconds and replayed from the log with the same result.

Sign convention: debits are positive, credits negative, and every journal entry sums to
zero per currency. Merchant accounts are liabilities (credit-normal), so a merchant's
displayed balance is the negated sum of its postings.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from schemas.common import Channel, CurrencyNotPriced, FeePlan
from schemas.envelope import Event
from schemas.ledger import AdjustmentPosted, AdjustmentPostedPayload, Posting
from schemas.payments import (
    PaymentPaidAfterClose,
    PaymentPaidAfterClosePayload,
    PaymentSucceeded,
    PaymentSucceededPayload,
)
from schemas.refunds import RefundInitiator, RefundSucceeded, RefundSucceededPayload
from services.common.invariant import InvariantViolation, invariant

PAYMENT_SUCCEEDED_KIND = "payment_succeeded"

FEE_REVENUE_ACCOUNT = "platform:fee_revenue"
# What operations gave merchants (or took back) by manual adjustments: platform expense
# when positive (debit-normal).
ADJUSTMENTS_ACCOUNT = "platform:adjustments"
ADJUSTMENT_KIND = "adjustment"
# Money a channel took for a payment that was already over, owed back to the payer until
# it is refunded.
REFUNDS_CLEARING_ACCOUNT = "platform:refunds_clearing"
PAID_AFTER_CLOSE_KIND = "payment_paid_after_close"
REFUND_SUCCEEDED_KIND = "refund_succeeded"

# Entry ids derive from the source event, so a rebuild of the journal from the log gives
# every entry the id it had before, and two deliveries of one event name the same entry.
_ENTRY_ID_NAMESPACE = uuid.NAMESPACE_URL


class UnbalancedEntry(ValueError):
    """A journal entry whose postings do not sum to zero in some currency (or is malformed).

    `code` is stable for logs and API errors; `currency` names the currency that does not
    balance, when there is one.
    """

    code = "unbalanced_entry"

    def __init__(self, message: str, *, currency: str | None = None) -> None:
        super().__init__(message)
        self.currency = currency


class InvalidMerchantId(ValueError):
    """A merchant id that cannot name ledger accounts unambiguously."""

    code = "invalid_merchant_id"


def fee_for(amount_minor: int, currency: str, fee_plan: FeePlan) -> int:
    """The fee on a payment of `amount_minor` in `currency`, in that currency's minor units.

    `fee = fixed + round_half_even(amount_minor * basis_points / 10000)`, capped at
    `amount_minor` so a merchant is never charged more than the payment brought in, where
    `fixed` is the plan's fixed part in `currency` (`FeePlan.fixed_minor_for`: set per
    currency, since 30 minor units are 0.30 CNY but 30 KRW; a payment recorded before
    fixed fees were per currency keeps the one fixed part it was charged).

    Why half-even ("banker's rounding"): over many payments, ties round up as often as
    down, so the platform neither gains nor loses systematically from rounding; and it is
    one well-known rule (IEEE 754 default, Python's `round`, Decimal's ROUND_HALF_EVEN)
    that a merchant auditing a statement can reproduce exactly in a spreadsheet or script.

    The fee plan travels in the event, so replaying the log gives the same fees even after
    a merchant's plan has changed. Raises InvariantViolation on a non-positive amount or
    a currency the plan does not price, both of which the payment contracts exclude.
    """
    invariant(amount_minor > 0, f"amount_minor must be positive, got {amount_minor}")
    try:
        return fee_plan.fee_minor(amount_minor, currency)
    except CurrencyNotPriced as error:
        raise InvariantViolation(f"a payment's fee plan prices its currency: {error}") from error


def channel_receivable_account(channel: Channel | str) -> str:
    """What `channel` owes the platform for payments it collected (an asset, debit-normal)."""
    return f"platform:channel_receivable:{Channel(channel).value}"


def merchant_account_prefix(merchant_id: str) -> str:
    """The prefix shared by every account of `merchant_id`, e.g. `merchant:mch_1:`.

    Raises InvalidMerchantId when the id is empty or contains `:`, which would let one
    merchant's accounts share a prefix with another's.
    """
    if merchant_id == "" or ":" in merchant_id:
        raise InvalidMerchantId(f"merchant id {merchant_id!r} is empty or contains ':'")
    return f"merchant:{merchant_id}:"


def merchant_pending_account(merchant_id: str) -> str:
    """What the platform owes `merchant_id` before settlement (a liability, credit-normal).

    Raises InvalidMerchantId like `merchant_account_prefix`.
    """
    return f"{merchant_account_prefix(merchant_id)}pending"


def merchant_of_account(account_id: str) -> str | None:
    """The merchant whose account `account_id` is (`merchant:{id}:{bucket}`), else None."""
    kind, _, rest = account_id.partition(":")
    merchant_id, separator, bucket = rest.partition(":")
    if kind != "merchant" or not separator or not merchant_id or not bucket:
        return None
    return merchant_id


def merchant_available_account(merchant_id: str) -> str:
    """Settled funds the merchant may be paid out (a liability, credit-normal)."""
    return f"{merchant_account_prefix(merchant_id)}available"


def entry_id_for(source_event_id: uuid.UUID | str) -> str:
    """The deterministic id of the journal entry that records `source_event_id`."""
    name = f"payrail:ledger:{source_event_id}"
    return f"je_{uuid.uuid5(_ENTRY_ID_NAMESPACE, name).hex}"


def _lines(currency: str, lines: Iterable[tuple[str, int]]) -> list[Posting]:
    # A zero line carries no information and the journal refuses it, so it is left out
    # (a payment without a fee has no fee line; a fee equal to the gross, no merchant line).
    return [
        Posting(account_id=account_id, currency=currency, amount_minor=amount_minor)
        for account_id, amount_minor in lines
        if amount_minor != 0
    ]


def payment_succeeded_entry(payment: PaymentSucceededPayload, merchant_id: str) -> list[Posting]:
    """The postings that record a successful payment of gross G with fee F, shared out
    in splits S1..Sn (a marketplace's sellers or partners):

    - debit  `platform:channel_receivable:{channel}`  +G  (the channel owes us the gross)
    - credit `merchant:{merchant_id}:pending`          -(G - F - S1 - ... - Sn)
    - credit `merchant:{recipient_i}:pending`          -Si  for each split
    - credit `platform:fee_revenue`                    -F

    The merchant of record pays the fee; the contract guarantees the splits fit in G - F.
    Zero lines are omitted. The result is balanced (checked before it is returned).
    Raises InvalidMerchantId for a merchant id containing `:`, and UnbalancedEntry only on
    a bug in this function.
    """
    gross_minor = payment.amount_minor
    fee_minor = fee_for(gross_minor, payment.currency, payment.fee_plan)
    shared_minor = sum(split.amount_minor for split in payment.splits)
    invariant(shared_minor <= gross_minor - fee_minor, "splits exceed the net of the payment")
    postings = _lines(
        payment.currency,
        [
            (channel_receivable_account(payment.channel), gross_minor),
            (merchant_pending_account(merchant_id), -(gross_minor - fee_minor - shared_minor)),
            *(
                (merchant_pending_account(split.recipient_id), -split.amount_minor)
                for split in payment.splits
            ),
            (FEE_REVENUE_ACCOUNT, -fee_minor),
        ],
    )
    check_balanced(postings)
    return postings


def paid_after_close_entry(payment: PaymentPaidAfterClosePayload) -> list[Posting]:
    """The postings that record money taken for a closed payment: the channel owes us the
    gross, which we owe back to the payer. No fee and nothing for the merchant.

    - debit  `platform:channel_receivable:{channel}`  +G
    - credit `platform:refunds_clearing`               -G
    """
    postings = _lines(
        payment.currency,
        [
            (channel_receivable_account(payment.channel), payment.amount_minor),
            (REFUNDS_CLEARING_ACCOUNT, -payment.amount_minor),
        ],
    )
    check_balanced(postings)
    return postings


def refund_succeeded_entry(refund: RefundSucceededPayload, merchant_id: str) -> list[Posting]:
    """The postings that record a refund R the channel paid back to the payer.

    A merchant's refund (or an order cancelled after payment) comes out of the merchant's
    balance; the platform keeps the payment's fee, as card schemes and most PSPs do, so
    the merchant bears the whole refunded amount:

    - debit  `merchant:{merchant_id}:pending`          +R
    - credit `platform:channel_receivable:{channel}`  -R

    The automatic refund of money paid after a payment closed clears what was owed to
    the payer and never touches the merchant:

    - debit  `platform:refunds_clearing`               +R
    - credit `platform:channel_receivable:{channel}`  -R
    """
    owed_by = (
        REFUNDS_CLEARING_ACCOUNT
        if refund.initiator is RefundInitiator.PAID_AFTER_CLOSE
        else merchant_pending_account(merchant_id)
    )
    postings = _lines(
        refund.currency,
        [
            (owed_by, refund.amount_minor),
            (channel_receivable_account(refund.channel), -refund.amount_minor),
        ],
    )
    check_balanced(postings)
    return postings


def adjustment_entry(adjustment: AdjustmentPostedPayload, merchant_id: str) -> list[Posting]:
    """The postings of a manual adjustment A of a merchant's available balance (A > 0
    gives the merchant money, A < 0 takes it; a reversal is the opposite adjustment):

    - debit  `platform:adjustments`            +A
    - credit `merchant:{merchant_id}:available`  -A
    """
    postings = _lines(
        adjustment.currency,
        [
            (ADJUSTMENTS_ACCOUNT, adjustment.amount_minor),
            (merchant_available_account(merchant_id), -adjustment.amount_minor),
        ],
    )
    check_balanced(postings)
    return postings


def check_balanced(postings: Sequence[Posting]) -> None:
    """Check that `postings` form a valid journal entry.

    Raises UnbalancedEntry when there are fewer than two postings, a posting is zero, or
    the postings of some currency do not sum to zero.
    """
    if len(postings) < 2:
        raise UnbalancedEntry(f"a journal entry needs two or more postings, got {len(postings)}")
    totals: dict[str, int] = {}
    for line, posting in enumerate(postings, start=1):
        if posting.amount_minor == 0:
            raise UnbalancedEntry(f"posting {line} on {posting.account_id} is zero")
        totals[posting.currency] = totals.get(posting.currency, 0) + posting.amount_minor
    for currency, total_minor in sorted(totals.items()):
        if total_minor != 0:
            raise UnbalancedEntry(
                f"{currency} postings sum to {total_minor}, not 0", currency=currency
            )


# Which entry each money-moving event posts: its kind and its postings (pure domain).
ENTRY_RULES: dict[type[Event], tuple[str, Callable[[Any], list[Posting]]]] = {
    PaymentSucceeded: (
        PAYMENT_SUCCEEDED_KIND,
        lambda event: payment_succeeded_entry(event.payload, event.merchant_id),
    ),
    PaymentPaidAfterClose: (
        PAID_AFTER_CLOSE_KIND,
        lambda event: paid_after_close_entry(event.payload),
    ),
    RefundSucceeded: (
        REFUND_SUCCEEDED_KIND,
        lambda event: refund_succeeded_entry(event.payload, event.merchant_id),
    ),
}

# The entry an adjustment posts, from the event alone (live and in a rebuild). The ledger
# records adjustments itself, so they are not among the consumed ENTRY_RULES.
ADJUSTMENT_ENTRY_RULES: dict[type[Event], tuple[str, Callable[[Any], list[Posting]]]] = {
    AdjustmentPosted: (
        ADJUSTMENT_KIND,
        lambda event: adjustment_entry(event.payload, event.merchant_id),
    ),
}
