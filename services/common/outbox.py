"""The outbox relay: publishes committed messages to Kafka, in commit order, then marks them.

1. Rows of `event_store` whose `published_at` is null are published in `position` order,
   at most `batch_size_max` per round, and marked in the same transaction. A round holds
   a transaction-scoped advisory lock per schema, so two relays on one schema (two
   processes of one service) never publish the same rows at the same time, and the
   records of one key reach the broker in position order.
2. A crash between publish and mark republishes the batch on restart; consumers
   de-duplicate by message id, so delivery is at-least-once and effects exactly-once.
   Nothing is ever published before the transaction that wrote it has committed, because
   the relay only sees committed rows.
3. A writer in the same process calls `wake()` after its transaction commits and the
   relay starts a round at once; writers in other processes are found by polling every
   `poll_interval_ms`. When another relay on the schema is mid-round, the round is tried
   again after `lock_retry_interval_ms` rather than a whole poll later, so this
   process's rows are not held up behind it.
4. The broker can always be rebuilt from the store. The relay records the cluster id of
   the broker it publishes to (`relay_broker_identity`). At start, after any failed
   round, and every `broker_identity_check_interval_ms`, it asks the broker for its
   cluster id; when that differs from the recorded one, the broker has lost what was
   published (the embedded broker keeps memory only and gets a new id at every start),
   so every row is marked unpublished again and the whole history is published anew,
   in position order (`broker_history_redrive` in the log). The periodic check is
   needed because a broker restarted underneath a running relay does not always make a
   round fail: the producer reconnects to the new broker at the same address, and a
   broker that creates topics on first use accepts the records.
5. Failures (broker or database away) are retried with capped exponential backoff; the
   messages stay in the store until they are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog
from aiokafka.admin import AIOKafkaAdminClient

from services.common.db import check_schema_name
from services.common.metrics import OUTBOX_PUBLISHED

log = structlog.get_logger(__name__)

POLL_INTERVAL_MS_DEFAULT = 500
# Another relay's round lasts one batch's publish; trying again this soon keeps this
# process's rows from waiting a whole poll interval behind it.
LOCK_RETRY_INTERVAL_MS_DEFAULT = 20
# One metadata request per check. Rows a new broker received before the check are
# published again with the rest of the history, so the interval bounds only how late a
# lost history is restored, never what it holds.
BROKER_IDENTITY_CHECK_INTERVAL_MS_DEFAULT = 5_000
FAILURE_BACKOFF_S_MAX = 10.0


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


class BrokerIdentity(Protocol):
    async def cluster_id(self) -> str:
        """The id of the broker cluster the relay's publisher writes to.

        Raises when the broker cannot be asked (unreachable, timed out) or names no id.
        """
        ...


class BrokerIdentityUnknown(Exception):
    """The broker answered without a cluster id, so a lost history could not be noticed."""


class KafkaClusterIdentity:
    """Asks a Kafka cluster for its id with one metadata request (`describe_cluster`).

    Apache Kafka keeps its cluster id as long as it keeps its data; the embedded broker is
    started with a new id each time, because it starts empty.
    """

    def __init__(self, bootstrap_servers: str, *, request_timeout_ms: int = 10_000) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._request_timeout_ms = request_timeout_ms

    async def cluster_id(self) -> str:
        """Raises KafkaError or TimeoutError when the cluster cannot be asked, and
        BrokerIdentityUnknown when it names no id."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap_servers,
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            # Starting the client and the request each take up to one request timeout.
            async with asyncio.timeout(2 * self._request_timeout_ms / 1000):
                await admin.start()
                description = await admin.describe_cluster()
        finally:
            # Closed outside the deadline: a close cut short by it would leave the
            # client's connections open.
            await asyncio.shield(admin.close())
        cluster_id = description.get("cluster_id")
        if not cluster_id:
            raise BrokerIdentityUnknown(f"{self._bootstrap_servers} names no cluster id")
        return str(cluster_id)


_HAS_PENDING = "SELECT EXISTS (SELECT FROM event_store WHERE published_at IS NULL)"

_SELECT_PENDING = """
SELECT position, topic, message_key, message_type, correlation_id, message_id::text,
       body::text AS body
FROM event_store
WHERE published_at IS NULL
ORDER BY position
LIMIT $1
"""

_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext($1))"


@dataclass(frozen=True)
class _Round:
    published_count: int
    lock_busy: bool


class OutboxRelay:
    """Publishes one schema's outbox. One relay per schema runs a round at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        publisher: RecordPublisher,
        *,
        topic_prefix: str = "",
        batch_size_max: int = 500,
        poll_interval_ms: int = POLL_INTERVAL_MS_DEFAULT,
        lock_retry_interval_ms: int = LOCK_RETRY_INTERVAL_MS_DEFAULT,
        broker_identity: BrokerIdentity | None = None,
        broker_identity_check_interval_ms: int = BROKER_IDENTITY_CHECK_INTERVAL_MS_DEFAULT,
    ) -> None:
        self._pool = pool
        self._schema = check_schema_name(schema)
        self._publisher = publisher
        self._topic_prefix = topic_prefix
        self._batch_size_max = batch_size_max
        self._poll_interval_s = poll_interval_ms / 1000
        self._lock_retry_interval_s = lock_retry_interval_ms / 1000
        self._broker_identity = broker_identity
        self._broker_identity_check_interval_s = broker_identity_check_interval_ms / 1000
        self._lock_key = f"relay:{self._schema}"
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Start a round now. Call it after a transaction that wrote to the outbox has
        committed (never before: the relay would not see the rows yet), from the event loop
        the relay runs on. Cheap and idempotent; wakes that come during a round start
        another round right after it."""
        self._woken.set()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished messages. Returns how many were published
        (0 also when another relay on the schema holds the round).

        Raises whatever the publisher raises; the batch then stays unpublished.
        """
        return (await self._publish_round()).published_count

    async def _publish_round(self) -> _Round:
        # Most polls find nothing: one indexed probe, without a transaction or the lock.
        if not await self._pool.fetchval(_HAS_PENDING):
            return _Round(0, lock_busy=False)
        async with self._pool.acquire() as connection, connection.transaction():
            if not await connection.fetchval(_TRY_LOCK, self._lock_key):
                return _Round(0, lock_busy=True)
            rows = await connection.fetch(_SELECT_PENDING, self._batch_size_max)
            if not rows:
                return _Round(0, lock_busy=False)
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
        return _Round(len(records), lock_busy=False)

    async def check_broker_identity(self) -> int:
        """Compare the broker's cluster id with the one last published to; when the broker
        is another one, mark every published row unpublished again so the whole history is
        published to it. Returns the number of rows marked. Without a `broker_identity`
        there is nothing to compare and nothing is marked.

        Raises whatever the identity lookup raises, and database errors; nothing is then
        marked or recorded.
        """
        if self._broker_identity is None:
            return 0
        cluster_id = await self._broker_identity.cluster_id()
        async with self._pool.acquire() as connection, connection.transaction():
            # Waits for a round in progress to end: the marks and the new id must not
            # interleave with another relay's publishing.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._lock_key)
            recorded = await connection.fetchval(
                "SELECT cluster_id FROM relay_broker_identity FOR UPDATE"
            )
            if recorded == cluster_id:
                return 0
            # A store without a recorded id was published to a broker nobody noted (or to
            # none): only an untouched store can skip the republishing safely.
            marked_count = 0
            if recorded is not None or await connection.fetchval(
                "SELECT EXISTS (SELECT FROM event_store WHERE published_at IS NOT NULL)"
            ):
                status = await connection.execute(
                    "UPDATE event_store SET published_at = NULL WHERE published_at IS NOT NULL"
                )
                marked_count = int(status.split()[-1])
            await connection.execute(
                "UPDATE relay_broker_identity SET cluster_id = $1, recorded_at = now()",
                cluster_id,
            )
        if marked_count or recorded is not None:
            log.warning(
                "broker_history_redrive",
                schema=self._schema,
                row_count=marked_count,
                previous_cluster_id=recorded,
                cluster_id=cluster_id,
            )
        else:
            log.info("broker_identity_recorded", schema=self._schema, cluster_id=cluster_id)
        return marked_count

    async def run(self) -> None:
        """Publish until cancelled: when woken, when another relay's round has ended, and
        every poll interval. Errors are logged and retried, never raised."""
        if self._broker_identity is None:
            log.warning("outbox_broker_identity_unchecked", schema=self._schema)
        identity_checked_at: float | None = None
        backoff_s = self._poll_interval_s
        while True:
            try:
                now = time.monotonic()
                if (
                    identity_checked_at is None
                    or now - identity_checked_at >= self._broker_identity_check_interval_s
                ):
                    await self.check_broker_identity()
                    identity_checked_at = now
                outcome = await self._publish_round()
                while outcome.published_count == self._batch_size_max:
                    outcome = await self._publish_round()
            except Exception as error:
                # The broker may come back as another one (restarted, memory lost), so
                # its identity is checked again before the next round.
                identity_checked_at = None
                log.warning("outbox_publish_failed", error=repr(error), retry_in_s=backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, FAILURE_BACKOFF_S_MAX)
                continue
            backoff_s = self._poll_interval_s
            await self._wait_for_work(
                self._lock_retry_interval_s if outcome.lock_busy else self._poll_interval_s
            )

    async def _wait_for_work(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout=timeout_s)
        # Cleared before the next round reads: a wake during that round sets it again and
        # is not lost.
        self._woken.clear()
