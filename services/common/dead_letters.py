"""Dead letters: messages a consumer can never apply, kept where an operator can act on them.

1. A dead letter is a row of the consuming service's `dead_letters` table, written before
   the record's offset is committed: it survives a restart of the broker.
2. The same body failing again for the same consumer (a redelivery) is one dead letter
   seen again, not a new one.
3. Every new dead letter records a `DeadLetterRecorded` event (schemas/operations.py) in
   the service's event store, in the same transaction as its row: the relay publishes it
   to `operations.events` after the commit and the notifier sends it to the ops webhook
   as `dead_letter.recorded`. A letter seen again records nothing, and neither does one
   parked from `operations.events` itself: if an announcement could never apply, parking
   it would announce a new letter, and so on without end.
4. After the commit, every new dead letter is logged with its reason, counted in
   `payrail_dead_letters_total`, and copied to the `dead_letters` topic with the reason in
   its headers for whoever watches the stream.
5. `payrail dead-letters redrive` marks letters `redrive_requested`; the consuming
   service (which has the handlers) applies them through its normal inbox path, once,
   and marks them `redriven`. A letter that fails again goes back to `parked` with the
   new reason.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from schemas import Topic, new_event
from schemas.operations import (
    DEAD_LETTER_REASON_LENGTH_MAX,
    PLATFORM_MERCHANT_ID,
    DeadLetterRecorded,
    DeadLetterRecordedPayload,
    dead_letter_aggregate_id,
)
from services.common.clock import Clock
from services.common.db import Connection
from services.common.event_store import append_events
from services.common.metrics import DEAD_LETTERS_RECORDED

log = structlog.get_logger(__name__)

REASON_LENGTH_MAX = 2000


@dataclass(frozen=True)
class DeadLetter:
    consumer: str
    source_topic: str
    source_partition: int
    source_offset: int
    message_key: bytes | None
    body: bytes
    reason: str
    message_id: uuid.UUID | None = None
    message_type: str | None = None


# Publishes a copy of a new dead letter to the dead-letter topic; raising is logged only.
DeadLetterCopier = Callable[[DeadLetter], Awaitable[None]]

_UPSERT = """
INSERT INTO dead_letters (dead_letter_id, consumer, source_topic, source_partition,
                          source_offset, message_key, message_id, message_type, body,
                          body_sha256, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (consumer, body_sha256) DO UPDATE
    SET last_seen_at = now(), seen_count = dead_letters.seen_count + 1,
        reason = EXCLUDED.reason,
        status = CASE WHEN dead_letters.status = 'redriven' THEN 'redriven' ELSE 'parked' END
RETURNING dead_letter_id, (xmax = 0) AS is_new
"""


async def record_dead_letter(connection: Connection, letter: DeadLetter) -> tuple[uuid.UUID, bool]:
    """Write `letter` (or count it seen again). Returns (its id, whether it is new)."""
    row = await connection.fetchrow(
        _UPSERT,
        uuid.uuid4(),
        letter.consumer,
        letter.source_topic,
        letter.source_partition,
        letter.source_offset,
        letter.message_key,
        letter.message_id,
        letter.message_type,
        letter.body,
        hashlib.sha256(letter.body).digest(),
        letter.reason[:REASON_LENGTH_MAX],
    )
    if row is None:
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return row["dead_letter_id"], bool(row["is_new"])


def is_announcement(letter: DeadLetter) -> bool:
    """Whether `letter` was read from `operations.events`, where dead letters are announced
    (whatever the deployment's topic prefix)."""
    return letter.source_topic.endswith(Topic.OPERATIONS_EVENTS.value)


def dead_letter_recorded(
    letter: DeadLetter, dead_letter_id: uuid.UUID, *, service: str, occurred_at: datetime
) -> DeadLetterRecorded:
    """The event that announces the new dead letter `dead_letter_id` of `service`."""
    aggregate_id = dead_letter_aggregate_id(dead_letter_id)
    return new_event(
        DeadLetterRecorded,
        DeadLetterRecordedPayload(
            dead_letter_id=dead_letter_id,
            service=service,
            consumer=letter.consumer,
            source_topic=letter.source_topic,
            source_partition=letter.source_partition,
            source_offset=letter.source_offset,
            message_id=letter.message_id,
            message_type=letter.message_type,
            reason=letter.reason[:DEAD_LETTER_REASON_LENGTH_MAX],
        ),
        aggregate_id=aggregate_id,
        aggregate_version=1,
        merchant_id=PLATFORM_MERCHANT_ID,
        producer=service,
        occurred_at=occurred_at,
        # The parked message's own correlation id is not at hand (it may not even have
        # been readable), so the letter starts a correlation of its own.
        correlation_id=aggregate_id,
        causation_id=None if letter.message_id is None else str(letter.message_id),
    )


class DeadLetterSink:
    """Parks dead letters in the schema of `service`, announces the new ones in its event
    store in the same transaction, then reports them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        service: str,
        clock: Clock,
        copier: DeadLetterCopier | None = None,
    ) -> None:
        self._pool = pool
        self._service = service
        self._clock = clock
        self._copier = copier

    async def park(self, letters: Sequence[DeadLetter]) -> None:
        """Record every letter, and a `DeadLetterRecorded` event for each new one, in one
        transaction. Raises what the database raises (the caller retries: the offsets are
        not committed until this returns)."""
        if not letters:
            return
        async with self._pool.acquire() as connection, connection.transaction():
            results = [await self._record(connection, letter) for letter in letters]
        for letter, (dead_letter_id, is_new) in zip(letters, results, strict=True):
            if is_new:
                await self._report(letter, dead_letter_id)

    async def _record(self, connection: Connection, letter: DeadLetter) -> tuple[uuid.UUID, bool]:
        dead_letter_id, is_new = await record_dead_letter(connection, letter)
        if is_new and not is_announcement(letter):
            # A fresh id is a fresh stream, so version 1 cannot conflict; the row and its
            # announcement commit together or not at all.
            event = dead_letter_recorded(
                letter, dead_letter_id, service=self._service, occurred_at=self._clock.now()
            )
            await append_events(connection, event.aggregate_id, 0, [event])
        return dead_letter_id, is_new

    async def _report(self, letter: DeadLetter, dead_letter_id: uuid.UUID) -> None:
        DEAD_LETTERS_RECORDED.labels(letter.consumer).inc()
        log.error(
            "message_dead_lettered",
            dead_letter_id=str(dead_letter_id),
            consumer=letter.consumer,
            source_topic=letter.source_topic,
            partition=letter.source_partition,
            offset=letter.source_offset,
            message_type=letter.message_type,
            reason=letter.reason[:500],
        )
        if self._copier is not None:
            try:
                await self._copier(letter)
            except Exception as error:
                # The row is the record; the topic copy is a courtesy to watchers.
                log.warning("dead_letter_copy_failed", error=repr(error))


@dataclass(frozen=True)
class DeadLetterView:
    dead_letter_id: uuid.UUID
    schema: str
    consumer: str
    source_topic: str
    source_partition: int
    source_offset: int
    message_id: uuid.UUID | None
    message_type: str | None
    reason: str
    status: str
    first_seen_at: datetime
    last_seen_at: datetime
    seen_count: int
    redrive_count: int
    redriven_at: datetime | None
    body: bytes


def _view(schema: str, row: Any) -> DeadLetterView:
    return DeadLetterView(
        dead_letter_id=row["dead_letter_id"],
        schema=schema,
        consumer=row["consumer"],
        source_topic=row["source_topic"],
        source_partition=row["source_partition"],
        source_offset=row["source_offset"],
        message_id=row["message_id"],
        message_type=row["message_type"],
        reason=row["reason"],
        status=row["status"],
        first_seen_at=row["first_seen_at"],
        last_seen_at=row["last_seen_at"],
        seen_count=row["seen_count"],
        redrive_count=row["redrive_count"],
        redriven_at=row["redriven_at"],
        body=bytes(row["body"]),
    )


async def list_dead_letters(
    connection: Connection, schema: str, *, limit: int = 100
) -> list[DeadLetterView]:
    """The newest dead letters of `schema`, at most `limit` (the schema name is checked by
    the caller)."""
    rows = await connection.fetch(
        f"SELECT * FROM {schema}.dead_letters ORDER BY first_seen_at DESC LIMIT $1", limit
    )
    return [_view(schema, row) for row in rows]


async def find_dead_letter(
    connection: Connection, schema: str, dead_letter_id: uuid.UUID
) -> DeadLetterView | None:
    row = await connection.fetchrow(
        f"SELECT * FROM {schema}.dead_letters WHERE dead_letter_id = $1", dead_letter_id
    )
    return None if row is None else _view(schema, row)


async def request_redrive(
    connection: Connection, schema: str, dead_letter_id: uuid.UUID | None
) -> int:
    """Ask the consuming service to apply one parked letter (or all when `dead_letter_id`
    is None) again. Returns how many were marked."""
    result = await connection.execute(
        f"UPDATE {schema}.dead_letters SET status = 'redrive_requested'"
        " WHERE status = 'parked' AND ($1::uuid IS NULL OR dead_letter_id = $1)",
        dead_letter_id,
    )
    return int(result.split()[-1])


async def claim_redrive_requests(
    connection: Connection, limit: int, consumers: Sequence[str] | None = None
) -> list[DeadLetterView]:
    """Letters waiting for a redrive, locked for this transaction (others skip them); only
    those of `consumers` when given (two services may share one schema)."""
    rows = await connection.fetch(
        "SELECT * FROM dead_letters WHERE status = 'redrive_requested'"
        " AND ($2::text[] IS NULL OR consumer = ANY($2::text[]))"
        " ORDER BY first_seen_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
        None if consumers is None else list(consumers),
    )
    return [_view("", row) for row in rows]


async def mark_redriven(connection: Connection, dead_letter_id: uuid.UUID) -> None:
    await connection.execute(
        "UPDATE dead_letters SET status = 'redriven', redriven_at = now(),"
        " redrive_count = redrive_count + 1 WHERE dead_letter_id = $1",
        dead_letter_id,
    )


async def mark_parked_again(connection: Connection, dead_letter_id: uuid.UUID, reason: str) -> None:
    await connection.execute(
        "UPDATE dead_letters SET status = 'parked', reason = $2,"
        " redrive_count = redrive_count + 1, last_seen_at = now() WHERE dead_letter_id = $1",
        dead_letter_id,
        reason[:REASON_LENGTH_MAX],
    )
