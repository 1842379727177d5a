"""`payrail dead-letters list | show ID | redrive ID|--all`: dead letters across services.

Every service parks its dead letters in its own schema; these commands read all of them
through DATABASE_URL. A redrive only marks letters; the consuming service applies them
through its inbox (at most once) and marks each `redriven`, or `parked` again with the
new reason, which `redrive` waits for and reports.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import TextIO

import asyncpg

from services.common.dead_letters import (
    DeadLetterView,
    find_dead_letter,
    list_dead_letters,
    request_redrive,
)
from services.common.launcher import SERVICE_MIGRATIONS

SCHEMAS: tuple[str, ...] = tuple(SERVICE_MIGRATIONS)


class DatabaseUnreachable(Exception):
    """DATABASE_URL names no database this command can open."""


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        raise DatabaseUnreachable(
            f"cannot open the database ({error}); set DATABASE_URL to the platform's"
        ) from error


async def _schemas_with_dead_letters(connection: asyncpg.Connection) -> list[str]:
    rows = await connection.fetch(
        "SELECT table_schema FROM information_schema.tables"
        " WHERE table_name = 'dead_letters' AND table_schema = ANY($1::text[])",
        list(SCHEMAS),
    )
    present = {row["table_schema"] for row in rows}
    return [schema for schema in SCHEMAS if schema in present]


async def list_all(dsn: str, limit: int, out: TextIO) -> int:
    connection = await _connect(dsn)
    try:
        letters: list[DeadLetterView] = []
        for schema in await _schemas_with_dead_letters(connection):
            letters += await list_dead_letters(connection, schema, limit=limit)
    finally:
        await connection.close()
    letters.sort(key=lambda letter: letter.first_seen_at, reverse=True)
    if not letters:
        print("No dead letters.", file=out)
        return 0
    for letter in letters[:limit]:
        print(
            f"{letter.dead_letter_id}  {letter.status:<17}  {letter.consumer:<32}"
            f"  {letter.message_type or '-':<28}  {letter.first_seen_at:%Y-%m-%d %H:%M:%S}"
            f"  {letter.reason[:80]}",
            file=out,
        )
    return 0


def _document(letter: DeadLetterView) -> dict[str, object]:
    try:
        body: object = json.loads(letter.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = letter.body.decode("utf-8", errors="replace")
    return {
        "dead_letter_id": str(letter.dead_letter_id),
        "service": letter.schema,
        "consumer": letter.consumer,
        "status": letter.status,
        "reason": letter.reason,
        "source": {
            "topic": letter.source_topic,
            "partition": letter.source_partition,
            "offset": letter.source_offset,
        },
        "message_id": str(letter.message_id) if letter.message_id else None,
        "message_type": letter.message_type,
        "first_seen_at": letter.first_seen_at.isoformat(),
        "last_seen_at": letter.last_seen_at.isoformat(),
        "seen_count": letter.seen_count,
        "redrive_count": letter.redrive_count,
        "redriven_at": letter.redriven_at.isoformat() if letter.redriven_at else None,
        "body": body,
    }


async def _find(connection: asyncpg.Connection, dead_letter_id: uuid.UUID) -> DeadLetterView | None:
    for schema in await _schemas_with_dead_letters(connection):
        letter = await find_dead_letter(connection, schema, dead_letter_id)
        if letter is not None:
            return letter
    return None


async def show(dsn: str, dead_letter_id: uuid.UUID, out: TextIO) -> int:
    connection = await _connect(dsn)
    try:
        letter = await _find(connection, dead_letter_id)
    finally:
        await connection.close()
    if letter is None:
        print(f"No dead letter {dead_letter_id}.", file=out)
        return 1
    print(json.dumps(_document(letter), indent=2), file=out)
    return 0


async def redrive(dsn: str, dead_letter_id: uuid.UUID | None, wait_s: float, out: TextIO) -> int:
    """Mark one letter (or every parked one) for redrive and wait up to `wait_s` for the
    services to apply them. Non-zero when a letter is unknown, failed again, or is still
    waiting (its service is not running)."""
    connection = await _connect(dsn)
    try:
        schemas = await _schemas_with_dead_letters(connection)
        if dead_letter_id is not None:
            letter = await _find(connection, dead_letter_id)
            if letter is None:
                print(f"No dead letter {dead_letter_id}.", file=out)
                return 1
            if letter.status != "parked":
                print(
                    f"{dead_letter_id} is {letter.status}; only a parked letter is redriven.",
                    file=out,
                )
                return 1
            schemas = [letter.schema]
        marked: list[uuid.UUID] = []
        for schema in schemas:
            async with connection.transaction():
                before = await _ids_with_status(connection, schema, "redrive_requested")
                await request_redrive(connection, schema, dead_letter_id)
                after = await _ids_with_status(connection, schema, "redrive_requested")
            marked += sorted(after - before)
        if not marked:
            print("Nothing to redrive.", file=out)
            return 0
        print(f"Redriving {len(marked)} dead letter(s)...", file=out)
        outcome = await _wait_for_outcome(connection, marked, wait_s)
    finally:
        await connection.close()
    failed = 0
    for letter_id, letter in outcome.items():
        if letter is None or letter.status == "redrive_requested":
            print(f"{letter_id}  still waiting: is its service running?", file=out)
            failed += 1
        elif letter.status == "redriven":
            print(f"{letter_id}  redriven", file=out)
        else:
            print(f"{letter_id}  parked again: {letter.reason}", file=out)
            failed += 1
    return 1 if failed else 0


async def _ids_with_status(
    connection: asyncpg.Connection, schema: str, status: str
) -> set[uuid.UUID]:
    rows = await connection.fetch(
        f"SELECT dead_letter_id FROM {schema}.dead_letters WHERE status = $1", status
    )
    return {row["dead_letter_id"] for row in rows}


async def _wait_for_outcome(
    connection: asyncpg.Connection, letter_ids: Sequence[uuid.UUID], wait_s: float
) -> dict[uuid.UUID, DeadLetterView | None]:
    deadline = time.monotonic() + wait_s
    while True:
        outcome = {letter_id: await _find(connection, letter_id) for letter_id in letter_ids}
        waiting = any(
            letter is not None and letter.status == "redrive_requested"
            for letter in outcome.values()
        )
        if not waiting or time.monotonic() >= deadline:
            return outcome
        await asyncio.sleep(0.2)
