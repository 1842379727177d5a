"""The catalogue of every message type: decoding, upcasting and construction.

A consumer never validates a message against a shape it guessed: `decode` reads the
message's type and version, upgrades an old shape with the registered upcasters, and
validates it against the one class registered for that topic and type.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.channels import (
    ChannelPaymentPrepared,
    ChannelPaymentRejected,
    ChannelPaymentSucceeded,
    CloseChannelTrade,
    QueryChannelPayment,
    SubmitChannelPayment,
)
from schemas.envelope import Command, Event, Message
from schemas.ledger import AdjustmentPosted, JournalEntryPosted, SettlementCreated
from schemas.merchants import MerchantOnboarded, MerchantUpdated, upcast_merchant_onboarded_v1_v2
from schemas.operations import (
    ChannelDiscrepancyRecorded,
    ChannelOperationUnresolved,
    DeadLetterRecorded,
)
from schemas.orders import OrderCancelled, OrderPlaced
from schemas.payments import (
    CancelPayment,
    CreatePayment,
    PaymentActionRequired,
    PaymentCanceled,
    PaymentCreated,
    PaymentExpired,
    PaymentFailed,
    PaymentHeldForReview,
    PaymentPaidAfterClose,
    PaymentRiskApproved,
    PaymentSucceeded,
    upcast_add_expires_at,
)
from schemas.payouts import (
    BankPayoutFailed,
    BankPayoutPaid,
    PayoutCreated,
    PayoutFailed,
    PayoutPaid,
    SubmitBankPayout,
)
from schemas.refunds import (
    ChannelRefundAccepted,
    ChannelRefundFailed,
    ChannelRefundSucceeded,
    QueryChannelRefund,
    RefundFailed,
    RefundRefused,
    RefundRequested,
    RefundSucceeded,
    RequestRefund,
    SubmitChannelRefund,
)
from schemas.risk import (
    BlocklistChanged,
    RiskAlertRaised,
    RiskDecisionMade,
    RiskRulesUpdated,
    upcast_risk_rules_updated_v1_v2,
)
from schemas.topics import Topic
from schemas.webhooks import WebhookEndpointDisabled

EVENT_TYPES: tuple[type[Event], ...] = (
    OrderPlaced,
    OrderCancelled,
    MerchantOnboarded,
    MerchantUpdated,
    PaymentCreated,
    PaymentRiskApproved,
    PaymentHeldForReview,
    PaymentActionRequired,
    PaymentSucceeded,
    PaymentFailed,
    PaymentCanceled,
    PaymentExpired,
    PaymentPaidAfterClose,
    RefundRequested,
    RefundRefused,
    RefundSucceeded,
    RefundFailed,
    RiskDecisionMade,
    RiskRulesUpdated,
    BlocklistChanged,
    RiskAlertRaised,
    ChannelPaymentPrepared,
    ChannelPaymentRejected,
    ChannelPaymentSucceeded,
    ChannelRefundAccepted,
    ChannelRefundSucceeded,
    ChannelRefundFailed,
    JournalEntryPosted,
    SettlementCreated,
    AdjustmentPosted,
    PayoutCreated,
    PayoutPaid,
    PayoutFailed,
    BankPayoutPaid,
    BankPayoutFailed,
    WebhookEndpointDisabled,
    DeadLetterRecorded,
    ChannelDiscrepancyRecorded,
    ChannelOperationUnresolved,
)
COMMAND_TYPES: tuple[type[Command], ...] = (
    CreatePayment,
    CancelPayment,
    SubmitChannelPayment,
    CloseChannelTrade,
    QueryChannelPayment,
    RequestRefund,
    SubmitChannelRefund,
    QueryChannelRefund,
    SubmitBankPayout,
)
MESSAGE_TYPES: tuple[type[Event] | type[Command], ...] = EVENT_TYPES + COMMAND_TYPES


def _type_name(cls: type[Event] | type[Command]) -> str:
    field = "event_type" if issubclass(cls, Event) else "command_type"
    default = cls.model_fields[field].default
    if not isinstance(default, str):
        raise TypeError(f"{cls.__name__} must fix {field} as a literal default")
    return default


def _current_version(cls: type[Event] | type[Command]) -> int:
    default = cls.model_fields["schema_version"].default
    if not isinstance(default, int):
        raise TypeError(f"{cls.__name__} must fix schema_version as a literal default")
    return default


MESSAGE_CLASSES: dict[tuple[Topic, str], type[Event] | type[Command]] = {
    (cls.topic, _type_name(cls)): cls for cls in MESSAGE_TYPES
}
if len(MESSAGE_CLASSES) != len(MESSAGE_TYPES):
    raise RuntimeError("two message classes share one topic and type name")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type name, from version) -> function returning the message at version + 1. An old
# shape in the log is upgraded step by step to the current class on read; the stored
# event itself is never rewritten.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("MerchantOnboarded", 1): upcast_merchant_onboarded_v1_v2,
    ("CreatePayment", 1): upcast_add_expires_at,
    ("PaymentCreated", 1): upcast_add_expires_at,
    ("RiskRulesUpdated", 1): upcast_risk_rules_updated_v1_v2,
}


class UndecodableMessage(ValueError):
    """A message body that is not a valid payrail message for its topic. Carries a reason."""


def upcast(raw: dict[str, Any], type_name: str, target_version: int) -> dict[str, Any]:
    """Apply the registered upcasters until `raw` reaches `target_version`.

    Raises UndecodableMessage when a step is missing or the version is from the future.
    """
    version = raw.get("schema_version")
    if not isinstance(version, int):
        raise UndecodableMessage("schema_version is missing or not an integer")
    if version > target_version:
        raise UndecodableMessage(
            f"{type_name} schema_version {version} is newer than this service knows "
            f"({target_version})"
        )
    steps_max = target_version - version
    for _ in range(steps_max):
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise UndecodableMessage(f"no upcaster for {type_name} v{version}")
        raw = step(raw)
        version = raw["schema_version"]
    return raw


def decode(topic: Topic, body: bytes) -> Message:
    """Parse and validate one message read from `topic`.

    Raises UndecodableMessage with a human-readable reason for anything that is not a
    known message of that topic in a valid shape.
    """
    return decode_object(topic, parse_body(body))


def decode_typed(topic: Topic, type_name: str, body: bytes) -> Message:
    """`decode` for a body whose type is known beforehand (the relay's `message_type`
    header): validated straight from the JSON bytes, the cheap path for the current
    schema version. An older version (to upcast) or a body that is not what the header
    says takes the full path of `decode`.

    Raises UndecodableMessage.
    """
    cls = MESSAGE_CLASSES.get((topic, type_name))
    if cls is None:
        raise UndecodableMessage(f"unknown message type {type_name!r} on topic {topic.value}")
    try:
        return cls.model_validate_json(body)
    except ValidationError:
        return decode(topic, body)


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a message body. Raises UndecodableMessage when it is not one."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UndecodableMessage(f"body is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise UndecodableMessage("body is not a JSON object")
    return raw


def message_type_name(raw: Mapping[str, Any]) -> str | None:
    """The `event_type` or `command_type` of a parsed body, if it names one."""
    name = raw.get("event_type", raw.get("command_type"))
    return name if isinstance(name, str) else None


def decode_object(topic: Topic, raw: dict[str, Any]) -> Message:
    """Validate a parsed message body read from `topic` (see `decode`).

    Raises UndecodableMessage.
    """
    type_name = message_type_name(raw)
    if not isinstance(type_name, str):
        raise UndecodableMessage("neither event_type nor command_type is a string")
    cls = MESSAGE_CLASSES.get((topic, type_name))
    if cls is None:
        raise UndecodableMessage(f"unknown message type {type_name!r} on topic {topic.value}")
    raw = upcast(raw, type_name, _current_version(cls))
    try:
        return cls.model_validate(raw)
    except ValidationError as error:
        raise UndecodableMessage(f"invalid {type_name}: {error}") from error


def encode(message: Message) -> bytes:
    return message.model_dump_json().encode()


E = TypeVar("E", bound=Event)
C = TypeVar("C", bound=Command)


def new_event(
    cls: type[E],
    payload: BaseModel | Mapping[str, Any],
    *,
    aggregate_id: str,
    aggregate_version: int,
    merchant_id: str,
    producer: str,
    occurred_at: datetime,
    correlation_id: str,
    causation_id: str | None,
) -> E:
    """Build a new event with a fresh id. The caller supplies the time from its clock."""
    return cls.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": occurred_at,
            "producer": producer,
            "aggregate_id": aggregate_id,
            "aggregate_version": aggregate_version,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "merchant_id": merchant_id,
            "payload": payload,
        }
    )


def new_command(
    cls: type[C],
    payload: BaseModel | Mapping[str, Any],
    *,
    aggregate_id: str,
    merchant_id: str,
    producer: str,
    issued_at: datetime,
    correlation_id: str,
    causation_id: str | None,
) -> C:
    """Build a new command with a fresh id."""
    return cls.model_validate(
        {
            "command_id": uuid.uuid4(),
            "issued_at": issued_at,
            "producer": producer,
            "aggregate_id": aggregate_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "merchant_id": merchant_id,
            "payload": payload,
        }
    )
