"""Ledger facts. The ledger owns the double-entry journal."""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from schemas.envelope import Contract, Event
from schemas.money import CurrencyCode, SignedAmountMinor
from schemas.topics import Topic


class Posting(Contract):
    """One line of a journal entry. Debits are positive, credits negative."""

    account_id: str = Field(min_length=1, max_length=200)
    currency: CurrencyCode
    amount_minor: SignedAmountMinor


class JournalEntryPostedPayload(Contract):
    entry_id: str = Field(min_length=1, max_length=128)
    kind: str = Field(min_length=1, max_length=64)
    source_event_id: str = Field(min_length=1, max_length=128)
    source_aggregate_id: str = Field(min_length=1, max_length=128)
    postings: tuple[Posting, ...] = Field(min_length=2)


class JournalEntryPosted(Event):
    topic: ClassVar[Topic] = Topic.LEDGER_EVENTS
    event_type: Literal["JournalEntryPosted"] = "JournalEntryPosted"
    schema_version: Literal[1] = 1
    payload: JournalEntryPostedPayload


class SettlementLine(Contract):
    """One journal entry a settlement covers and what it changes for the merchant."""

    entry_id: str = Field(min_length=1, max_length=128)
    kind: str = Field(min_length=1, max_length=64)
    source_event_id: str = Field(min_length=1, max_length=128)
    amount_minor: SignedAmountMinor = Field(description="Positive adds to what is owed.")


class SettlementCreatedPayload(Contract):
    batch_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    settlement_date: date
    net_minor: SignedAmountMinor
    lines: tuple[SettlementLine, ...] = Field(min_length=1)


class SettlementCreated(Event):
    """Funds of one merchant, currency and day moved from pending to available."""

    topic: ClassVar[Topic] = Topic.LEDGER_EVENTS
    event_type: Literal["SettlementCreated"] = "SettlementCreated"
    schema_version: Literal[1] = 1
    payload: SettlementCreatedPayload


class SettlementBatchSummary(Contract):
    """What a settlement run reports for each batch it created."""

    batch_id: str = Field(min_length=1, max_length=128)
    merchant_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    settlement_date: date
    net_minor: SignedAmountMinor
    line_count: int = Field(ge=1)


class AdjustmentPostedPayload(Contract):
    """A manual correction of a merchant's available balance by operations, with its
    reason. A reversal is an adjustment of the opposite amount that names the one it
    reverses: the journal is never edited."""

    adjustment_id: str = Field(min_length=1, max_length=128)
    currency: CurrencyCode
    amount_minor: SignedAmountMinor = Field(
        description="Added to the merchant's available balance (negative takes it away)."
    )
    reason: str = Field(min_length=1, max_length=500)
    reverses: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _moves_money(self) -> Self:
        if self.amount_minor == 0:
            raise ValueError("an adjustment of 0 changes nothing")
        return self


class AdjustmentPosted(Event):
    topic: ClassVar[Topic] = Topic.LEDGER_EVENTS
    event_type: Literal["AdjustmentPosted"] = "AdjustmentPosted"
    schema_version: Literal[1] = 1
    payload: AdjustmentPostedPayload
