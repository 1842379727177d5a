"""Append-only event store that doubles as the transactional outbox.

Every function takes an open connection: the caller owns the transaction, so the state
change, the events it produces and the inbox record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from schemas import Command, Event, Message, Topic, decode, encode
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
    connection: asyncpg.Connection,
    stream_id: str,
    expected_version: int,
    events: Sequence[Event],
) -> None:
    """Append `events` to `stream_id`, which must be at `expected_version` now.

    Raises ConcurrencyConflict when another transaction appended first.
    """
    for offset, event in enumerate(events, start=1):
        invariant(event.aggregate_id == stream_id, "event belongs to another stream")
        invariant(
            event.aggregate_version == expected_version + offset,
            f"event version {event.aggregate_version} does not follow {expected_version}",
        )
    if not events:
        return
    try:
        async with connection.transaction():  # a savepoint: the caller's transaction survives
            await connection.executemany(_INSERT, [_row(event) for event in events])
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == "stream_version_unique":
            raise ConcurrencyConflict(stream_id, expected_version) from error
        raise


async def enqueue_commands(connection: asyncpg.Connection, commands: Sequence[Command]) -> None:
    """Write commands to the outbox; the relay sends them after the transaction commits."""
    if commands:
        await connection.executemany(_INSERT, [_row(command) for command in commands])


async def load_stream(connection: asyncpg.Connection, stream_id: str) -> list[Event]:
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
