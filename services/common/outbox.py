"""The outbox relay: publishes committed messages to Kafka, in commit order, then marks them.

A crash between publish and mark republishes the batch on restart; consumers
de-duplicate by message id, so delivery is at-least-once and effects exactly-once.
Nothing is ever published before the transaction that wrote it has committed, because
the relay only sees committed rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog

from services.common.db import NotifyWakeup, check_schema_name
from services.common.metrics import OUTBOX_PUBLISHED

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class OutboundRecord:
    position: int
    topic: str
    key: str
    body: bytes
    headers: dict[str, str]


class RecordPublisher(Protocol):
    async def publish_batch(self, records: Sequence[OutboundRecord]) -> None:
        """Publish every record and return only when the broker acknowledged them all."""
        ...


_SELECT_PENDING = """
SELECT position, topic, message_key, message_type, correlation_id, message_id::text,
       body::text AS body
FROM event_store
WHERE published_at IS NULL
ORDER BY position
LIMIT $1
"""


class OutboxRelay:
    """Publishes one schema's outbox. One relay per schema runs at a time (advisory lock)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        publisher: RecordPublisher,
        *,
        topic_prefix: str = "",
        batch_size_max: int = 500,
        poll_interval_ms: int = 500,
    ) -> None:
        self._pool = pool
        self._schema = check_schema_name(schema)
        self._publisher = publisher
        self._topic_prefix = topic_prefix
        self._batch_size_max = batch_size_max
        self._poll_interval_s = poll_interval_ms / 1000

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished messages. Returns how many were published.

        Raises whatever the publisher raises; the batch then stays unpublished.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            locked = await connection.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", f"relay:{self._schema}"
            )
            if not locked:
                return 0
            rows = await connection.fetch(_SELECT_PENDING, self._batch_size_max)
            if not rows:
                return 0
            records = [
                OutboundRecord(
                    position=row["position"],
                    topic=f"{self._topic_prefix}{row['topic']}",
                    key=row["message_key"],
                    body=row["body"].encode(),
                    headers={
                        "message_type": row["message_type"],
                        "message_id": row["message_id"],
                        "correlation_id": row["correlation_id"],
                        "content-type": "application/json",
                    },
                )
                for row in rows
            ]
            await self._publisher.publish_batch(records)
            await connection.execute(
                "UPDATE event_store SET published_at = now() WHERE position = ANY($1::bigint[])",
                [record.position for record in records],
            )
        OUTBOX_PUBLISHED.labels(self._schema).inc(len(records))
        log.debug("outbox_published", count=len(records))
        return len(records)

    async def run(self) -> None:
        """Publish until cancelled: on every NOTIFY from the event store, else every poll."""
        backoff_s = self._poll_interval_s
        async with NotifyWakeup(self._pool, f"{self._schema}_outbox") as wakeup:
            while True:
                try:
                    while await self.publish_pending() == self._batch_size_max:
                        pass
                    backoff_s = self._poll_interval_s
                except Exception as error:
                    # Operating errors (broker or database away) are retried with a capped
                    # backoff; the messages stay in the store until they are published.
                    log.warning("outbox_publish_failed", error=repr(error), retry_in_s=backoff_s)
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, 10.0)
                    continue
                await wakeup.wait(self._poll_interval_s)
