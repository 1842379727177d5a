"""Payout rules on their edges: the minimum, negative balances, and the three entries."""

from __future__ import annotations

import pytest

from schemas.ledger import Posting
from services.common.invariant import InvariantViolation
from services.ledger.payout_rules import (
    PAYOUTS_BANK_ACCOUNT,
    payout_amount,
    payout_created_entry,
    payout_failed_entry,
    payout_paid_entry,
)


@pytest.mark.parametrize(
    ("available", "paid"),
    [(-5_000, None), (0, None), (499, None), (500, 500), (501, 501), (10**12, 10**12)],
)
def test_a_payout_takes_the_whole_available_balance_from_the_minimum_up(
    available: int, paid: int | None
) -> None:
    assert payout_amount(available, 500) == paid


def test_the_minimum_must_be_positive() -> None:
    with pytest.raises(InvariantViolation):
        payout_amount(100, 0)


def _lines(postings: list[Posting]) -> list[tuple[str, int]]:
    return [(posting.account_id, posting.amount_minor) for posting in postings]


def test_a_payout_moves_available_to_in_transit_then_out_or_back() -> None:
    available, in_transit = "merchant:mch_1:available", "merchant:mch_1:payouts_in_transit"
    # Merchant accounts are credit-normal: a debit reduces what the merchant is owed.
    assert _lines(payout_created_entry("mch_1", "CNY", 700)) == [
        (available, 700),
        (in_transit, -700),
    ]
    assert _lines(payout_paid_entry("mch_1", "CNY", 700)) == [
        (in_transit, 700),
        (PAYOUTS_BANK_ACCOUNT, -700),
    ]
    assert _lines(payout_failed_entry("mch_1", "CNY", 700)) == [
        (in_transit, 700),
        (available, -700),
    ]


@pytest.mark.parametrize("amount", [0, -1])
def test_a_payout_entry_needs_a_positive_amount(amount: int) -> None:
    with pytest.raises(InvariantViolation):
        payout_created_entry("mch_1", "CNY", amount)
