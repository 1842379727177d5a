"""What a pure `decide` function returns, and how a handler records it.

Domain modules build `Decision`s from the contracts in `schemas`; only
`record_decision` (an I/O edge) wraps them in envelopes and writes them to the event
store and outbox, inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from schemas import Command, Event, Message, new_command, new_event
from schemas.envelope import Contract
from services.common.clock import Clock
from services.common.event_store import append_events, enqueue_commands


@dataclass(frozen=True)
class Emit:
    """An event the aggregate records about itself."""

    event_type: type[Event]
    payload: Contract


@dataclass(frozen=True)
class Send:
    """A command for the service that owns `aggregate_id`."""

    command_type: type[Command]
    payload: Contract
    aggregate_id: str


@dataclass(frozen=True)
class Decision:
    events: tuple[Emit, ...] = ()
    commands: tuple[Send, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.events and not self.commands


NOTHING = Decision()


async def record_decision(
    connection: asyncpg.Connection,
    decision: Decision,
    *,
    stream_id: str,
    expected_version: int,
    merchant_id: str,
    producer: str,
    clock: Clock,
    cause: Message | None,
    correlation_id: str | None = None,
) -> list[Event]:
    """Append the decision's events to `stream_id` and queue its commands, in the caller's
    transaction. The cause's correlation id follows; its message id becomes the causation.

    Raises ConcurrencyConflict when the stream moved past `expected_version`.
    """
    now = clock.now()
    correlation = correlation_id or (cause.correlation_id if cause else stream_id)
    causation = str(cause.message_id) if cause else None
    events = [
        new_event(
            emit.event_type,
            emit.payload,
            aggregate_id=stream_id,
            aggregate_version=expected_version + index,
            merchant_id=merchant_id,
            producer=producer,
            occurred_at=now,
            correlation_id=correlation,
            causation_id=causation,
        )
        for index, emit in enumerate(decision.events, start=1)
    ]
    commands = [
        new_command(
            send.command_type,
            send.payload,
            aggregate_id=send.aggregate_id,
            merchant_id=merchant_id,
            producer=producer,
            issued_at=now,
            correlation_id=correlation,
            causation_id=causation,
        )
        for send in decision.commands
    ]
    await append_events(connection, stream_id, expected_version, events)
    await enqueue_commands(connection, commands)
    return events


async def stream_version(connection: asyncpg.Connection, stream_id: str) -> int:
    """The current version of `stream_id` (0 when it has no events)."""
    version: int | None = await connection.fetchval(
        "SELECT max(stream_version) FROM event_store WHERE stream_id = $1", stream_id
    )
    return version or 0
