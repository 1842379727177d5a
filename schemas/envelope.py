"""The one envelope every payrail event and command travels in.

Events are facts in the past tense and are never changed; a correction is a new event.
Commands are requests addressed to the service that owns an aggregate. Both are frozen
pydantic models whose concrete classes fix `*_type` and `schema_version` as literals, so
a payload can always be validated against exactly one shape.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.topics import Topic

Identifier = Annotated[str, Field(min_length=1, max_length=128)]


def check_storable_text(value: object) -> None:
    """Raise ValueError when `value` holds text PostgreSQL cannot store: a NUL character,
    or a lone surrogate that has no UTF-8 encoding. Walks lists, tuples and dict keys and
    values; nested models check themselves."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain the NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError("text must be valid Unicode (no lone surrogates)") from error
    elif isinstance(value, list | tuple):
        for item in value:
            check_storable_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable_text(key)
            check_storable_text(item)


# Values that hold no text.
_STORABLE_SCALARS: frozenset[type] = frozenset(
    {int, bool, float, type(None), uuid.UUID, datetime, date, Decimal}
)


class Contract(BaseModel):
    """Base of every payload model: immutable, strict about unknown fields, and holding
    only text that can be stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        # Runs once when a model is built (pydantic reports a ValueError here as a
        # ValidationError), not again each time a built model is passed into another, as an
        # after-validator would. It runs for every model on every hop, so the common values
        # (ASCII text, numbers, ids, times, nested models, which checked themselves when
        # they were built) are decided by their exact type, without a call or an
        # isinstance check against a union.
        for value in self.__dict__.values():
            kind = type(value)
            if kind is str:
                if value.isascii():
                    if "\x00" in value:
                        raise ValueError("text must not contain the NUL character")
                    continue
                check_storable_text(value)
            elif kind in _STORABLE_SCALARS or isinstance(value, BaseModel):
                continue
            elif _holds_text(value):
                check_storable_text(value)


def _holds_text(value: object) -> bool:
    """Whether `value` is a container that may hold text to check; a tuple of models (a
    payload's lines) checked itself when its models were built."""
    if type(value) is tuple and all(isinstance(item, BaseModel) for item in value):
        return False
    return isinstance(value, str | list | tuple | dict)


class Event(Contract):
    """Envelope of an immutable fact recorded by the service that owns `aggregate_id`."""

    topic: ClassVar[Topic]

    event_id: uuid.UUID
    event_type: str
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    producer: Identifier
    aggregate_id: Identifier
    aggregate_version: int = Field(ge=1)
    correlation_id: Identifier
    causation_id: Identifier | None = None
    merchant_id: Identifier

    @property
    def message_id(self) -> uuid.UUID:
        return self.event_id

    @property
    def message_type(self) -> str:
        return self.event_type


class Command(Contract):
    """Envelope of a request for the service that owns `aggregate_id` to act."""

    topic: ClassVar[Topic]

    command_id: uuid.UUID
    command_type: str
    schema_version: int = Field(ge=1)
    issued_at: AwareDatetime
    producer: Identifier
    aggregate_id: Identifier
    correlation_id: Identifier
    causation_id: Identifier | None = None
    merchant_id: Identifier

    @property
    def message_id(self) -> uuid.UUID:
        return self.command_id

    @property
    def message_type(self) -> str:
        return self.command_type


Message = Event | Command
