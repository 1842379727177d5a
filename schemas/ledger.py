"""Ledger facts. The ledger owns the double-entry journal."""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal

from pydantic import Field

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
