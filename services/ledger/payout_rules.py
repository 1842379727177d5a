"""Payout rules, pure: how much a payout run pays, and the entries of a payout's life.

A payout takes a currency's whole available balance when it reaches the merchant's
minimum; a balance below it, zero or negative (a refund after settlement that is still
being recovered) pays nothing. Three entries, all balanced:

- created: `merchant:{id}:available` +A / `merchant:{id}:payouts_in_transit` -A
  (the money is still owed to the merchant, but on its way);
- paid:    `merchant:{id}:payouts_in_transit` +A / `platform:payouts_bank` -A
  (the platform's payout bank account paid it: the debt to the merchant is settled);
- failed:  `merchant:{id}:payouts_in_transit` +A / `merchant:{id}:available` -A
  (the money is back where it was, and the next run pays it again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.envelope import Event
from schemas.ledger import Posting
from schemas.payouts import PayoutCreated, PayoutFailed, PayoutPaid
from services.common.invariant import invariant
from services.ledger.domain import (
    check_balanced,
    merchant_account_prefix,
    merchant_available_account,
)

# The platform's bank account that payouts leave from (an asset, debit-normal): its
# balance goes down by every payout paid. Funding it from the channels' settlements is
# the business of reconciliation.
PAYOUTS_BANK_ACCOUNT = "platform:payouts_bank"

PAYOUT_CREATED_KIND = "payout_created"
PAYOUT_PAID_KIND = "payout_paid"
PAYOUT_FAILED_KIND = "payout_failed"


def merchant_in_transit_account(merchant_id: str) -> str:
    """Payouts on their way to the merchant's bank (a liability, credit-normal)."""
    return f"{merchant_account_prefix(merchant_id)}payouts_in_transit"


def payout_amount(available_minor: int, minimum_minor: int) -> int | None:
    """What a payout run pays from an available balance (merchant-facing, positive when
    owed), or None when the balance is below the minimum."""
    invariant(minimum_minor >= 1, f"the payout minimum must be positive, got {minimum_minor}")
    if available_minor < minimum_minor:
        return None
    return available_minor


def _move(debit_account: str, credit_account: str, currency: str, amount: int) -> list[Posting]:
    invariant(amount > 0, f"a payout amount must be positive, got {amount}")
    postings = [
        Posting(account_id=debit_account, currency=currency, amount_minor=amount),
        Posting(account_id=credit_account, currency=currency, amount_minor=-amount),
    ]
    check_balanced(postings)
    return postings


def payout_created_entry(merchant_id: str, currency: str, amount_minor: int) -> list[Posting]:
    return _move(
        merchant_available_account(merchant_id),
        merchant_in_transit_account(merchant_id),
        currency,
        amount_minor,
    )


def payout_paid_entry(merchant_id: str, currency: str, amount_minor: int) -> list[Posting]:
    return _move(
        merchant_in_transit_account(merchant_id), PAYOUTS_BANK_ACCOUNT, currency, amount_minor
    )


def payout_failed_entry(merchant_id: str, currency: str, amount_minor: int) -> list[Posting]:
    return _move(
        merchant_in_transit_account(merchant_id),
        merchant_available_account(merchant_id),
        currency,
        amount_minor,
    )


# The entry each payout event posts, from the event alone: the live ledger posts it when
# it records the event, and a rebuild replays it from the log with the same result.
PAYOUT_ENTRY_RULES: dict[type[Event], tuple[str, Callable[[Any], list[Posting]]]] = {
    PayoutCreated: (
        PAYOUT_CREATED_KIND,
        lambda event: payout_created_entry(
            event.merchant_id, event.payload.currency, event.payload.amount_minor
        ),
    ),
    PayoutPaid: (
        PAYOUT_PAID_KIND,
        lambda event: payout_paid_entry(
            event.merchant_id, event.payload.currency, event.payload.amount_minor
        ),
    ),
    PayoutFailed: (
        PAYOUT_FAILED_KIND,
        lambda event: payout_failed_entry(
            event.merchant_id, event.payload.currency, event.payload.amount_minor
        ),
    ),
}
