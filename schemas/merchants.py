"""Merchant facts recorded by the gateway, which onboards merchants."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from schemas.common import Channel, FeePlan
from schemas.envelope import Contract, Event
from schemas.money import PositiveAmountMinor
from schemas.topics import Topic


class MerchantOnboardedPayload(Contract):
    name: str = Field(min_length=1, max_length=200)
    channels: tuple[Channel, ...] = Field(min_length=1)
    fee_plans: dict[Channel, FeePlan]
    single_payment_limit_minor: PositiveAmountMinor | None = None


class MerchantOnboarded(Event):
    topic: ClassVar[Topic] = Topic.MERCHANTS_EVENTS
    event_type: Literal["MerchantOnboarded"] = "MerchantOnboarded"
    schema_version: Literal[1] = 1
    payload: MerchantOnboardedPayload
