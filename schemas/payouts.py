"""Payouts: settled funds sent to a merchant's bank account through the bank rail.

The ledger owns a payout (stream = payout id): a payout run records `PayoutCreated` (the
amount leaves the merchant's available balance and is in transit) together with the
command `SubmitBankPayout` for the gateway, which talks to the bank rail. The rail answers
asynchronously; the gateway records what it said (`BankPayoutPaid` or `BankPayoutFailed`
on channel.results), and the ledger closes the payout: `PayoutPaid`, or `PayoutFailed`,
which returns the amount to available.

Lifecycle: in_transit -> paid | failed. A payout is paid or failed once; a later,
contradicting result is logged and changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from schemas.common import Failure
from schemas.envelope import Command, Contract, Event
from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.topics import Topic

_PAYOUT_NAMESPACE = uuid.UUID("9a1f2b64-3c7d-4e58-8f90-2d6b5a4c3e71")


def payout_id_for(merchant_id: str, currency: str, payout_date: date) -> str:
    """One payout per merchant, currency and run day: a day run twice pays once."""
    return f"po_{uuid.uuid5(_PAYOUT_NAMESPACE, f'{merchant_id}/{currency}/{payout_date}').hex}"


class PayoutStatus(StrEnum):
    IN_TRANSIT = "in_transit"
    PAID = "paid"
    FAILED = "failed"


class PayoutCreatedPayload(Contract):
    payout_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    amount_minor: PositiveAmountMinor
    payout_date: date


class PayoutCreated(Event):
    """Available funds left the merchant's balance for its bank account (in transit)."""

    topic: ClassVar[Topic] = Topic.LEDGER_EVENTS
    event_type: Literal["PayoutCreated"] = "PayoutCreated"
    schema_version: Literal[1] = 1
    payload: PayoutCreatedPayload


class PayoutPaidPayload(Contract):
    payout_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    amount_minor: PositiveAmountMinor
    bank_reference: str = Field(min_length=1, max_length=128)


class PayoutPaid(Event):
    """The bank credited the merchant's account."""

    topic: ClassVar[Topic] = Topic.LEDGER_EVENTS
    event_type: Literal["PayoutPaid"] = "PayoutPaid"
    schema_version: Literal[1] = 1
    payload: PayoutPaidPayload


class PayoutFailedPayload(Contract):
    payout_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    amount_minor: PositiveAmountMinor
    failure: Failure


class PayoutFailed(Event):
    """The bank did not pay; the amount is back in the merchant's available balance."""

    topic: ClassVar[Topic] = Topic.LEDGER_EVENTS
    event_type: Literal["PayoutFailed"] = "PayoutFailed"
    schema_version: Literal[1] = 1
    payload: PayoutFailedPayload


class BankPayoutRequest(Contract):
    payout_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    amount_minor: PositiveAmountMinor


class SubmitBankPayout(Command):
    """For the gateway: send this payout to the bank rail (the payout id is the rail's
    idempotency key, so a redelivered command pays once)."""

    topic: ClassVar[Topic] = Topic.CHANNEL_COMMANDS
    command_type: Literal["SubmitBankPayout"] = "SubmitBankPayout"
    schema_version: Literal[1] = 1
    payload: BankPayoutRequest


class BankPayoutPaidPayload(Contract):
    payout_id: str = Field(min_length=1, max_length=128)
    bank_reference: str = Field(min_length=1, max_length=128)


class BankPayoutPaid(Event):
    """The bank rail said the payout was paid (its notification, or its answer)."""

    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["BankPayoutPaid"] = "BankPayoutPaid"
    schema_version: Literal[1] = 1
    payload: BankPayoutPaidPayload


class BankPayoutFailedPayload(Contract):
    payout_id: str = Field(min_length=1, max_length=128)
    failure: Failure


class BankPayoutFailed(Event):
    """The bank rail refused the payout or reported it failed."""

    topic: ClassVar[Topic] = Topic.CHANNEL_RESULTS
    event_type: Literal["BankPayoutFailed"] = "BankPayoutFailed"
    schema_version: Literal[1] = 1
    payload: BankPayoutFailedPayload


class PayoutSummary(Contract):
    """What a payout run reports for each payout it created."""

    payout_id: str = Field(min_length=1, max_length=128)
    merchant_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    amount_minor: PositiveAmountMinor
    payout_date: date
