"""Append-only event store that doubles as the transactional outbox.

Every function takes an open connection: the caller owns the transaction, so the state
change, the events it produces and the inbox record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from schemas import Command, Event, Message, Topic, decode, encode, new_command, new_event
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision
from services.common.invariant import InvariantViolation, invariant


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream first. Reload the stream and decide again."""

    def __init__(self, stream_id: str, expected_version: int) -> None:
        super().__init__(f"stream {stream_id} moved past version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


_INSERT = """
INSERT INTO event_store (message_id, message_type, topic, message_key, stream_id,
                         stream_version, merchant_id, correlation_id, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb)
"""


def _row(message: Message) -> tuple[object, ...]:
    is_event = isinstance(message, Event)
    return (
        message.message_id,
        message.message_type,
        message.topic.value,
        message.aggregate_id,
        message.aggregate_id if is_event else None,
        message.aggregate_version if isinstance(message, Event) else None,
        message.merchant_id,
        message.correlation_id,
        encode(message).decode(),
    )


async def append_events(
    connection: Connection,
    stream_id: str,
    expected_version: int,
    events: Sequence[Event],
) -> None:
    """Append `events` to `stream_id`, which must be at `expected_version` now.

    Raises ConcurrencyConflict when another transaction appended first; the caller's
    transaction is then aborted and must be rolled back and retried.
    """
    for offset, event in enumerate(events, start=1):
        invariant(event.aggregate_id == stream_id, "event belongs to another stream")
        invariant(
            event.aggregate_version == expected_version + offset,
            f"event version {event.aggregate_version} does not follow {expected_version}",
        )
    if not events:
        return
    # No savepoint: a conflict aborts the caller's transaction, which must then be retried
    # from a fresh read anyway.
    try:
        await _insert(connection, events)
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "stream_version_unique":
            raise ConcurrencyConflict(stream_id, expected_version) from error
        raise


# Several messages in one statement. Positions are taken in the order of the arrays (the
# ORDER BY makes it explicit), so one stream's events keep their order for the relay.
_INSERT_SET = """
INSERT INTO event_store (message_id, message_type, topic, message_key, stream_id,
                         stream_version, merchant_id, correlation_id, body)
SELECT message_id, message_type, topic, message_key, stream_id, stream_version, merchant_id,
       correlation_id, body::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[],
            $7::text[], $8::text[], $9::text[])
    WITH ORDINALITY AS m(message_id, message_type, topic, message_key, stream_id,
                         stream_version, merchant_id, correlation_id, body, ordinal)
ORDER BY ordinal
"""


async def append_new_streams(connection: Connection, events: Sequence[Event]) -> None:
    """Append each of `events` as the first event of its own new stream, in one statement
    (set-wise work, such as a batch of journal entries).

    Raises ConcurrencyConflict when one of the streams already exists.
    """
    seen: set[str] = set()
    for event in events:
        invariant(event.aggregate_version == 1, "a new stream starts at version 1")
        invariant(event.aggregate_id not in seen, "one event per new stream")
        seen.add(event.aggregate_id)
    if not events:
        return
    try:
        await _insert(connection, events)
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "stream_version_unique":
            raise ConcurrencyConflict(events[0].aggregate_id, 0) from error
        raise


async def enqueue_commands(connection: Connection, commands: Sequence[Command]) -> None:
    """Write commands to the outbox; the relay sends them after the transaction commits."""
    if commands:
        await _insert(connection, commands)


async def _insert(connection: Connection, messages: Sequence[Message]) -> None:
    """One statement, whatever the number of messages: one round trip, one execution."""
    if len(messages) == 1:
        await connection.execute(_INSERT, *_row(messages[0]))
        return
    columns: list[list[object]] = [[] for _ in range(9)]
    for message in messages:
        for column, value in zip(columns, _row(message), strict=True):
            column.append(value)
    await connection.execute(_INSERT_SET, *columns)


async def load_stream(connection: Connection, stream_id: str) -> list[Event]:
    """Every event of `stream_id` in version order."""
    rows = await connection.fetch(
        "SELECT topic, body::text AS body FROM event_store"
        " WHERE stream_id = $1 ORDER BY stream_version",
        stream_id,
    )
    events: list[Event] = []
    for row in rows:
        message = decode(Topic(row["topic"]), row["body"].encode())
        if not isinstance(message, Event):
            raise InvariantViolation(f"stream {stream_id} holds a command")
        events.append(message)
    return events


async def record_decision(
    connection: Connection,
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


async def stream_version(connection: Connection, stream_id: str) -> int:
    """The current version of `stream_id` (0 when it has no events)."""
    version: int | None = await connection.fetchval(
        "SELECT max(stream_version) FROM event_store WHERE stream_id = $1", stream_id
    )
    return version or 0
