"""Events about running the platform itself, for operations rather than merchants.

A consumer that parks a message it can never apply (a dead letter, see
`services/common/dead_letters.py`) records `DeadLetterRecorded` in the same transaction as
the parked row, so an alert can never be lost and never precedes the row it points to. The
notifier sends it to the ops webhook as `dead_letter.recorded`. The aggregate is the dead
letter itself: one event, version 1, per letter; the same body failing again for the
same consumer is the same letter and raises nothing new.
"""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.common import Channel
from schemas.envelope import Contract, Event
from schemas.money import CurrencyCode
from schemas.topics import Topic

# The owner of events that belong to the platform rather than to one merchant; the
# notifier's ops endpoint belongs to it too.
PLATFORM_MERCHANT_ID = "platform"

# An alert carries the start of the reason; the whole reason stays on the dead letter's
# row, where `payrail dead-letters show` reads it.
DEAD_LETTER_REASON_LENGTH_MAX = 500


def dead_letter_aggregate_id(dead_letter_id: uuid.UUID) -> str:
    """The aggregate (and stream) id of the dead letter `dead_letter_id`."""
    return f"dl_{dead_letter_id.hex}"


class DeadLetterRecordedPayload(Contract):
    dead_letter_id: uuid.UUID = Field(
        description="The letter's id in `payrail dead-letters show` and `redrive`."
    )
    service: str = Field(
        min_length=1, max_length=63, description="The consuming service (its schema name)."
    )
    consumer: str = Field(
        min_length=1,
        max_length=512,
        description="The consumer's inbox name, `<service>:<topic>`.",
    )
    source_topic: str = Field(min_length=1, max_length=512)
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    message_id: uuid.UUID | None = Field(
        default=None, description="Null when the body could not be read as a message."
    )
    message_type: str | None = Field(default=None, min_length=1, max_length=128)
    reason: str = Field(
        max_length=DEAD_LETTER_REASON_LENGTH_MAX,
        description="Why the message can never apply, cut to its first 500 characters.",
    )


class DeadLetterRecorded(Event):
    """A consumer parked a message it can never apply; someone has to look at it."""

    topic: ClassVar[Topic] = Topic.OPERATIONS_EVENTS
    event_type: Literal["DeadLetterRecorded"] = "DeadLetterRecorded"
    schema_version: Literal[1] = 1
    payload: DeadLetterRecordedPayload


class ChannelDiscrepancyRecordedPayload(Contract):
    """A channel reported a payment or refund with another amount or currency than
    payrail's: the report is not applied, and someone has to look (reconciliation reads
    these too)."""

    payment_id: str = Field(min_length=1, max_length=128)
    refund_id: str | None = Field(default=None, min_length=1, max_length=128)
    channel: Channel
    channel_reference: str = Field(
        min_length=1, max_length=128, description="The channel's trade or refund id."
    )
    notification_id: str = Field(min_length=1, max_length=256)
    expected_amount_minor: int = Field(ge=0)
    expected_currency: CurrencyCode
    reported_amount_minor: int = Field(ge=0)
    reported_currency: CurrencyCode


class ChannelDiscrepancyRecorded(Event):
    """payment_center refused a channel result that contradicts the payment's terms."""

    topic: ClassVar[Topic] = Topic.OPERATIONS_EVENTS
    event_type: Literal["ChannelDiscrepancyRecorded"] = "ChannelDiscrepancyRecorded"
    schema_version: Literal[1] = 1
    payload: ChannelDiscrepancyRecordedPayload


class ChannelOperationUnresolvedPayload(Contract):
    """A call the connector owes a rail has had no definite answer for too long."""

    kind: str = Field(min_length=1, max_length=64, description="submit_payment, submit_payout...")
    subject_id: str = Field(
        min_length=1, max_length=128, description="The payment, refund or payout id."
    )
    rail: str = Field(min_length=1, max_length=32)
    attempts: int = Field(ge=1)
    first_attempt_at: AwareDatetime
    last_error: str = Field(default="", max_length=1000)


class ChannelOperationUnresolved(Event):
    """The connector keeps calling; an operator should look at the rail."""

    topic: ClassVar[Topic] = Topic.OPERATIONS_EVENTS
    event_type: Literal["ChannelOperationUnresolved"] = "ChannelOperationUnresolved"
    schema_version: Literal[1] = 1
    payload: ChannelOperationUnresolvedPayload
