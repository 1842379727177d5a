"""Merchant facts recorded by the gateway, which onboards and manages merchants.

Every merchant event carries the merchant's whole profile after the change, so a
consumer keeps its own copy with a plain upsert and never has to merge partial updates.
"""

from __future__ import annotations

import re
import zoneinfo
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from schemas.common import Channel, FeePlan
from schemas.envelope import Contract, Event
from schemas.money import PositiveAmountMinor
from schemas.topics import Topic

_CUTOFF_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def check_time_zone(name: str) -> str:
    """Return `name` when it is an IANA time zone; raise ValueError otherwise."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error
    return name


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_time_zone)]


class MerchantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class SettlementTerms(Contract):
    """T+N settlement: funds captured before the cutoff (merchant's local time) on day T
    become available on day T+N."""

    delay_days: int = Field(default=1, strict=True, ge=0, le=30)
    cutoff_time: str = Field(default="00:00", pattern=_CUTOFF_TIME.pattern)
    time_zone: TimeZoneName = "UTC"
    payout_minimum_minor: int = Field(
        default=100,
        strict=True,
        ge=1,
        le=100_000_000,
        description="A payout run pays a currency's available balance only when it is at "
        "least this many minor units; smaller balances wait for the next run.",
    )


class MerchantProfile(Contract):
    """A merchant's whole configuration."""

    name: str = Field(min_length=1, max_length=200)
    status: MerchantStatus = MerchantStatus.ACTIVE
    channels: tuple[Channel, ...] = Field(min_length=1)
    fee_plans: dict[Channel, FeePlan]
    single_payment_limit_minor: PositiveAmountMinor | None = None
    settlement_terms: SettlementTerms = SettlementTerms()
    payment_expiry_minutes: int = Field(default=30, strict=True, ge=1, le=10_080)
    refund_on_order_cancel: bool = Field(
        default=True,
        description="An upstream OrderCancelled for a paid order refunds what is still "
        "refundable (true, the default) or leaves the payment paid (false).",
    )

    @model_validator(mode="after")
    def _every_channel_has_a_fee_plan(self) -> Self:
        missing = [channel.value for channel in self.channels if channel not in self.fee_plans]
        if missing:
            raise ValueError(f"no fee plan for channels {missing}")
        return self


class MerchantOnboarded(Event):
    topic: ClassVar[Topic] = Topic.MERCHANTS_EVENTS
    event_type: Literal["MerchantOnboarded"] = "MerchantOnboarded"
    schema_version: Literal[2] = 2
    payload: MerchantProfile


class MerchantUpdated(Event):
    topic: ClassVar[Topic] = Topic.MERCHANTS_EVENTS
    event_type: Literal["MerchantUpdated"] = "MerchantUpdated"
    schema_version: Literal[1] = 1
    payload: MerchantProfile


def upcast_merchant_onboarded_v1_v2(raw: dict[str, object]) -> dict[str, object]:
    """v1 knew no status, settlement terms or payment expiry: v2 adds the defaults v1
    merchants were run with (active, T+1 at 00:00 UTC, 30 minutes)."""
    payload = dict(raw["payload"])  # type: ignore[call-overload]
    payload.setdefault("status", MerchantStatus.ACTIVE.value)
    payload.setdefault("settlement_terms", SettlementTerms().model_dump())
    payload.setdefault("payment_expiry_minutes", 30)
    return {**raw, "payload": payload, "schema_version": 2}
