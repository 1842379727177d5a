"""The batched, idempotent consumer: one per service, across its topics.

1. One Kafka consumer group per service (`payrail.<service>`) reads every topic the
   service subscribes to. Each fetch hands out a batch of records per partition; each
   partition's batch is worked on by its own task while that partition is paused, so
   partitions proceed side by side (at most `concurrency_max` at once, each holding one
   database connection) and one partition's records stay in offset order.
2. Records whose message type the service does not handle are skipped before any
   database work; the relay's `message_type` header says the type without parsing the
   body. Every other body is parsed once.
3. A body that is not a valid message of its topic is a dead letter (see
   `services.common.dead_letters`).
4. The rest of the batch is applied in ONE transaction: one statement records the whole
   batch in the inbox (consumer, message id) and returns the ids seen for the first
   time; only those are handed to the handlers, in offset order. A redelivered message
   changes nothing.
5. An error that may pass (`services.common.errors.is_transient`: the database or broker
   away, a failover, a conflict) rolls the batch back and retries it with capped,
   jittered backoff, for as long as it takes: the partition is held, never skipped.
   After `retry_count_max` attempts the partition is counted as held and logged as an
   error on every further attempt.
6. Any other error isolates the failing record: the batch is rolled back and applied one
   record per transaction, and the record that fails is parked as a dead letter alone;
   the others apply.
7. A batch's offset is committed after its database commit (and after any dead letters
   are written), together with the other partitions finished meanwhile, in one request.
   A crash before that redelivers the batch, which the inbox makes harmless.
8. When partitions are revoked (another instance joins, this one stops), batches in
   flight on them are given `revoke_wait_s` to finish and commit, then cancelled; their
   records go to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from schemas import (
    Message,
    Topic,
    UndecodableMessage,
    decode,
    decode_object,
    decode_typed,
    message_type_name,
    parse_body,
    topic_name,
)
from services.common.dead_letters import (
    DeadLetter,
    DeadLetterSink,
    claim_redrive_requests,
    mark_parked_again,
    mark_redriven,
)
from services.common.errors import (
    TRANSIENT_ERRORS,
    TransientError,
    backoff_s,
    is_transient,
)
from services.common.invariant import invariant
from services.common.metrics import (
    CONSUMER_BATCH_RECORDS,
    CONSUMER_LAG,
    CONSUMER_PARTITIONS_HELD,
    CONSUMER_TRANSIENT_RETRIES,
    MESSAGE_HANDLING_SECONDS,
    MESSAGES_CONSUMED,
)
from services.common.settings import ServiceSettings

__all__ = [
    "TRANSIENT_ERRORS",
    "BatchApplier",
    "BatchHandler",
    "Handler",
    "PartitionedConsumer",
    "RetryPolicy",
    "Subscription",
    "TransientError",
    "subscription_topics",
]

log = structlog.get_logger(__name__)

COMMIT_RETRY_PAUSE_S = 0.5

Handler = Callable[[asyncpg.Connection, Any], Awaitable[None]]
# A handler for set-shaped work: the messages of one batch seen for the first time, in
# offset order, inside the batch's transaction.
BatchHandler = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[None]]
# The advisory lock keys the handlers of these messages will take, asked for before any of
# them runs so that the whole transaction takes its locks in one global order.
LockKeys = Callable[[asyncpg.Connection, Sequence[Any]], Awaitable[Iterable[str]]]

# Takes the transaction-scoped advisory locks of `$1` (keys, hashed as the handlers hash
# them) in ascending lock-id order: two transactions that lock through here never wait on
# each other in a cycle. The sorted subquery feeds the aggregate row by row, in order.
_LOCK_IN_ORDER = (
    "SELECT count(pg_advisory_xact_lock(lock_id))"
    " FROM (SELECT DISTINCT hashtext(key) AS lock_id FROM unnest($1::text[]) AS key"
    "       ORDER BY lock_id) AS ordered"
)


class Record(Protocol):
    """What the consumer reads of a Kafka record (aiokafka's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def _type_name(cls: type[Message]) -> str:
    field_name = "event_type" if "event_type" in cls.model_fields else "command_type"
    default = cls.model_fields[field_name].default
    if not isinstance(default, str):
        raise TypeError(f"{cls.__name__} has no fixed type name")
    return default


class Subscription:
    """One topic a service consumes: its inbox name and what handles each message type.

    With `batch_handler`, the batch's new messages go to it together (set-wise work);
    `handlers` then only names the types to take. A `reference` topic holds what other
    messages are judged by (merchant terms and limits): its batches in a fetch are applied
    before the batches of other topics in the same fetch start.
    """

    def __init__(
        self,
        topic: Topic,
        inbox_name: str,
        handlers: Mapping[type[Message], Handler],
        batch_handler: BatchHandler | None = None,
        *,
        reference: bool = False,
        lock_keys: LockKeys | None = None,
    ) -> None:
        self.topic = topic
        self.inbox_name = inbox_name
        self.handlers = dict(handlers)
        self.batch_handler = batch_handler
        self.reference = reference
        self.lock_keys = lock_keys
        self.handled_type_names = frozenset(_type_name(cls) for cls in handlers)


@dataclass
class _Pending:
    record: Record
    subscription: Subscription
    message: Message


@dataclass
class BatchOutcome:
    applied: int = 0
    duplicate: int = 0
    skipped: int = 0
    dead_lettered: int = 0


def _header(record: Record, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            with contextlib.suppress(UnicodeDecodeError):
                return value.decode()
    return None


@dataclass
class RetryPolicy:
    retry_count_max: int = 5
    backoff_s_initial: float = 0.05
    backoff_s_max: float = 5.0

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RetryPolicy:
        return cls(
            retry_count_max=settings.consumer_retry_count_max,
            backoff_s_initial=settings.consumer_retry_backoff_ms_initial / 1000,
            backoff_s_max=settings.consumer_retry_backoff_ms_max / 1000,
        )


@dataclass
class BatchApplier:
    """Applies one partition's batch of records (steps 2-6 of the module docstring).

    Knows nothing of Kafka offsets or groups, so it is tested with a pool alone.
    """

    group: str
    pool: asyncpg.Pool
    subscriptions: Mapping[str, Subscription]  # by broker-side topic name
    dead_letters: DeadLetterSink
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Called with the messages applied, after their transaction committed.
    on_commit: Callable[[Sequence[Message]], None] | None = None

    async def apply(self, records: Sequence[Record]) -> BatchOutcome:
        outcome = BatchOutcome()
        pending: list[_Pending] = []
        letters: list[DeadLetter] = []
        for record in records:
            subscription = self.subscriptions[record.topic]
            prepared = self._prepare(record, subscription)
            if prepared is None:
                outcome.skipped += 1
            elif isinstance(prepared, DeadLetter):
                letters.append(prepared)
            else:
                pending.append(prepared)
        if pending:
            started = time.perf_counter()
            await self._apply_pending(pending, letters, outcome)
            MESSAGE_HANDLING_SECONDS.labels(self.group).observe(time.perf_counter() - started)
        if letters:
            await self._retry_transient(lambda: self.dead_letters.park(letters), outcome)
            outcome.dead_lettered = len(letters)
        if records:
            # A partition belongs to one topic, so a batch belongs to one subscription.
            self._count(self.subscriptions[records[0].topic].inbox_name, outcome)
        return outcome

    def _prepare(self, record: Record, subscription: Subscription) -> _Pending | DeadLetter | None:
        header_type = _header(record, "message_type")
        if header_type is not None and header_type not in subscription.handled_type_names:
            return None
        body = record.value or b""
        try:
            if header_type is not None:
                message = decode_typed(subscription.topic, header_type, body)
            else:
                raw = parse_body(body)
                type_name = message_type_name(raw)
                if type_name is not None and type_name not in subscription.handled_type_names:
                    return None
                message = decode_object(subscription.topic, raw)
        except UndecodableMessage as error:
            return self._letter(record, subscription, f"undecodable: {error}", None)
        if type(message) not in subscription.handlers:
            return None
        return _Pending(record, subscription, message)

    @staticmethod
    def _letter(
        record: Record, subscription: Subscription, reason: str, message: Message | None
    ) -> DeadLetter:
        return DeadLetter(
            consumer=subscription.inbox_name,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            message_key=record.key,
            body=record.value or b"",
            reason=reason,
            message_id=message.message_id if message else None,
            message_type=message.message_type if message else None,
        )

    async def _apply_pending(
        self, pending: list[_Pending], letters: list[DeadLetter], outcome: BatchOutcome
    ) -> None:
        poisoned = 0
        try:
            applied = await self._retry_transient(
                functools.partial(self._apply_together, pending), outcome
            )
        except Exception as error:
            # One record can never apply: find it by applying one record per transaction.
            log.warning(
                "consumer_batch_isolating", group=self.group, size=len(pending), error=repr(error)
            )
            applied = 0
            for item in pending:
                try:
                    applied += await self._retry_transient(
                        functools.partial(self._apply_together, [item]), outcome
                    )
                except Exception as item_error:
                    poisoned += 1
                    log.exception(
                        "message_poisoned",
                        message_id=str(item.message.message_id),
                        message_type=item.message.message_type,
                        correlation_id=item.message.correlation_id,
                    )
                    reason = f"{type(item_error).__name__}: {item_error}"
                    letters.append(
                        self._letter(item.record, item.subscription, reason, item.message)
                    )
        outcome.applied += applied
        outcome.duplicate += len(pending) - applied - poisoned

    async def _retry_transient(
        self, work: Callable[[], Awaitable[Any]], outcome: BatchOutcome
    ) -> Any:
        """Run `work` until it succeeds or fails for good (step 5). Raises the first
        error that is not transient."""
        attempt = 0
        held = False
        try:
            while True:
                try:
                    return await work()
                except Exception as error:
                    if not is_transient(error):
                        raise
                    attempt += 1
                    CONSUMER_TRANSIENT_RETRIES.labels(self.group).inc()
                    if attempt >= self.retry.retry_count_max:
                        if not held:
                            held = True
                            CONSUMER_PARTITIONS_HELD.labels(self.group).inc()
                        log.error(
                            "consumer_partition_held",
                            group=self.group,
                            attempt=attempt,
                            error=repr(error),
                        )
                    else:
                        log.warning(
                            "consumer_batch_retry",
                            group=self.group,
                            attempt=attempt,
                            error=repr(error),
                        )
                    await asyncio.sleep(
                        backoff_s(
                            attempt,
                            initial_s=self.retry.backoff_s_initial,
                            maximum_s=self.retry.backoff_s_max,
                        )
                    )
        finally:
            if held:
                CONSUMER_PARTITIONS_HELD.labels(self.group).dec()

    async def _apply_together(self, pending: Sequence[_Pending]) -> int:
        """One transaction: the inbox rows of the whole batch, then the new messages."""
        subscription = pending[0].subscription
        # A batch comes from one partition, and a partition belongs to one topic.
        invariant(
            all(item.subscription is subscription for item in pending),
            "a batch mixes subscriptions",
        )
        async with self.pool.acquire() as connection, connection.transaction():
            fresh = await record_in_inbox(
                connection,
                [
                    (item.subscription.inbox_name, item.message, item.subscription.topic)
                    for item in pending
                ],
            )
            new: list[_Pending] = []
            for item in pending:
                key = (item.subscription.inbox_name, item.message.message_id)
                # A message twice in one batch is new once: the first copy applies.
                if key in fresh:
                    fresh.discard(key)
                    new.append(item)
            await self._handle(
                cast(asyncpg.Connection, connection),
                subscription,
                [item.message for item in new],
            )
        if new and self.on_commit is not None:
            self.on_commit([item.message for item in new])
        return len(new)

    async def _handle(
        self,
        connection: asyncpg.Connection,
        subscription: Subscription,
        messages: Sequence[Message],
    ) -> None:
        """Hand the new messages of one subscription's batch to its handlers, in order."""
        if subscription.lock_keys is not None and messages:
            keys = sorted(set(await subscription.lock_keys(connection, messages)))
            if keys:
                await connection.fetchval(_LOCK_IN_ORDER, keys)
        if subscription.batch_handler is not None:
            await subscription.batch_handler(connection, messages)
            return
        for message in messages:
            with structlog.contextvars.bound_contextvars(
                correlation_id=message.correlation_id,
                message_id=str(message.message_id),
                message_type=message.message_type,
                consumer=subscription.inbox_name,
            ):
                await subscription.handlers[type(message)](connection, message)

    async def redrive_requested(self, limit: int = 100) -> int:
        """Apply the dead letters an operator asked to redrive (`payrail dead-letters
        redrive`) through the inbox, each at most once, in one transaction; a letter
        that fails again is parked with the new reason. Returns how many applied.

        Raises what is transient (the round is tried again later, nothing changed).
        """
        by_inbox = {
            subscription.inbox_name: subscription for subscription in self.subscriptions.values()
        }
        applied: list[Message] = []
        async with self.pool.acquire() as connection, connection.transaction():
            for letter in await claim_redrive_requests(connection, limit, list(by_inbox)):
                subscription = by_inbox.get(letter.consumer)
                if subscription is None:
                    await mark_parked_again(
                        connection,
                        letter.dead_letter_id,
                        f"no consumer {letter.consumer} in this service",
                    )
                    continue
                try:
                    # A savepoint per letter: one that fails again leaves the others.
                    async with connection.transaction():
                        message = await self._redrive_one(
                            cast(asyncpg.Connection, connection), subscription, letter.body
                        )
                        await mark_redriven(connection, letter.dead_letter_id)
                except Exception as error:
                    if is_transient(error):
                        raise
                    log.warning(
                        "dead_letter_redrive_failed",
                        dead_letter_id=str(letter.dead_letter_id),
                        error=repr(error),
                    )
                    await mark_parked_again(
                        connection, letter.dead_letter_id, f"{type(error).__name__}: {error}"
                    )
                    continue
                log.info(
                    "dead_letter_redriven",
                    dead_letter_id=str(letter.dead_letter_id),
                    applied=message is not None,
                )
                if message is not None:
                    applied.append(message)
        if applied and self.on_commit is not None:
            self.on_commit(applied)
        return len(applied)

    async def _redrive_one(
        self, connection: asyncpg.Connection, subscription: Subscription, body: bytes
    ) -> Message | None:
        """Apply one parked body through the inbox. Returns the message when it applied,
        None when the inbox had it already. Raises what applying raises."""
        message = decode(subscription.topic, body)
        if type(message) not in subscription.handlers:
            raise UndecodableMessage(
                f"{message.message_type} is not handled by {subscription.inbox_name}"
            )
        fresh = await record_in_inbox(
            connection, [(subscription.inbox_name, message, subscription.topic)]
        )
        if not fresh:
            return None
        await self._handle(connection, subscription, [message])
        return message

    @staticmethod
    def _count(inbox_name: str, outcome: BatchOutcome) -> None:
        for name, value in (
            ("applied", outcome.applied),
            ("duplicate", outcome.duplicate),
            ("skipped", outcome.skipped),
            ("dead_lettered", outcome.dead_lettered),
        ):
            if value:
                MESSAGES_CONSUMED.labels(inbox_name, name).inc(value)


_INBOX_INSERT = """
INSERT INTO inbox (consumer, message_id, topic)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])
ON CONFLICT DO NOTHING
RETURNING consumer, message_id
"""


async def record_in_inbox(
    connection: asyncpg.Connection | Any, items: Iterable[tuple[str, Message, Topic]]
) -> set[tuple[str, Any]]:
    """Record every (inbox name, message) in the inbox with one statement. Returns the
    (inbox name, message id) pairs that were not there before."""
    names: list[str] = []
    ids: list[Any] = []
    topics: list[str] = []
    for name, message, topic in items:
        names.append(name)
        ids.append(message.message_id)
        topics.append(topic.value)
    rows = await connection.fetch(_INBOX_INSERT, names, ids, topics)
    return {(row["consumer"], row["message_id"]) for row in rows}


class _RevokeWaiter(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: PartitionedConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._consumer.finish_in_flight(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info(
            "consumer_partitions_assigned", group=self._consumer.group_id, count=len(list(assigned))
        )


class PartitionedConsumer:
    """Reads the service's topics as one group and hands each partition's batch to the
    applier (steps 1, 7 and 8 of the module docstring)."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        client_id: str,
        topics: Sequence[str],
        applier: BatchApplier,
        batch_size_max: int = 500,
        concurrency_max: int = 8,
        fetch_max_wait_ms: int = 500,
        fetch_max_wait_ms_idle: int | None = None,
        idle_after_ms: int = 1_000,
        request_timeout_ms: int = 10_000,
        revoke_wait_s: float = 10.0,
        reference_wait_s: float = 5.0,
    ) -> None:
        self.group_id = group_id
        self._fetch_max_wait_ms_busy = fetch_max_wait_ms
        self._fetch_max_wait_ms_idle = fetch_max_wait_ms_idle or fetch_max_wait_ms
        self._idle_after_s = idle_after_ms / 1000
        self._applier = applier
        self._batch_size_max = batch_size_max
        self._slots = asyncio.Semaphore(concurrency_max)
        self._revoke_wait_s = revoke_wait_s
        self._reference_wait_s = reference_wait_s
        self._stop_wait_s = request_timeout_ms / 1000
        self._topics = list(topics)
        self._in_flight: dict[TopicPartition, asyncio.Task[None]] = {}
        self._pending_commits: dict[TopicPartition, int] = {}
        self._commit_wanted = asyncio.Event()
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_uncommitted",
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=1_048_576,
            request_timeout_ms=request_timeout_ms,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
        )

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, *, group_id: str, client_id: str, applier: BatchApplier
    ) -> PartitionedConsumer:
        """A consumer of every topic `applier` subscribes to, sized by `settings`."""
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            topics=list(applier.subscriptions),
            applier=applier,
            batch_size_max=settings.consumer_batch_size_max,
            concurrency_max=settings.consumer_concurrency_max,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            fetch_max_wait_ms_idle=settings.kafka_fetch_max_wait_ms_idle,
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )

    async def start(self) -> None:
        """Connect and subscribe; the group join completes in the first fetch."""
        self._kafka.subscribe(self._topics, listener=_RevokeWaiter(self))
        await self._kafka.start()

    async def stop(self) -> None:
        """Let batches in flight finish (bounded), commit, then leave the group.

        Bounded as a whole: a commit or a group leave that the broker never answers must
        not hold a service's shutdown; what was not committed is redelivered to the next
        member, and its inbox drops it.
        """
        try:
            async with asyncio.timeout(self._revoke_wait_s + self._stop_wait_s):
                await self.finish_in_flight(set(self._in_flight) | set(self._pending_commits))
        except TimeoutError:
            log.warning("consumer_stop_commit_timed_out", group=self.group_id)
        try:
            async with asyncio.timeout(self._stop_wait_s):
                await self._kafka.stop()
        except TimeoutError:
            log.warning("consumer_stop_timed_out", group=self.group_id)

    async def run(self) -> None:
        """Fetch and dispatch until cancelled. Raises when a batch task fails unexpectedly
        (the supervisor restarts the loop; uncommitted records are redelivered)."""
        committer = asyncio.create_task(self._commit_continuously())
        try:
            await self._fetch_and_dispatch(committer)
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)

    async def _fetch_and_dispatch(self, committer: asyncio.Task[None]) -> None:
        subscriptions = self._applier.subscriptions
        last_records_at = time.monotonic()
        while True:
            batches = await self._kafka.getmany(timeout_ms=1_000, max_records=self._batch_size_max)
            if batches:
                last_records_at = time.monotonic()
                self._set_fetch_wait(self._fetch_max_wait_ms_busy)
            elif time.monotonic() - last_records_at >= self._idle_after_s:
                self._set_fetch_wait(self._fetch_max_wait_ms_idle)
            reference = [
                self._dispatch(partition, records)
                for partition, records in batches.items()
                if records and subscriptions[partition.topic].reference
            ]
            if reference:
                # Merchant terms that arrived with the payments they govern apply first.
                # Bounded: a reference batch stuck on a database outage does not stall
                # the others for longer than this.
                await asyncio.wait(reference, timeout=self._reference_wait_s)
            for partition, records in batches.items():
                if records and not subscriptions[partition.topic].reference:
                    self._dispatch(partition, records)
            self._raise_failed()
            if committer.done():
                # It only ends by failing; the supervisor starts the loop again.
                committer.result()
                raise RuntimeError("the offset committer stopped")

    def _set_fetch_wait(self, wait_ms: int) -> None:
        """Set how long the next fetches wait in the broker for records.

        Short while records flow (each hop's latency), long once the consumer has been idle
        a while: the embedded broker re-checks every partition of a waiting fetch at half
        the remaining wait, so many short fetches on idle partitions keep it busy. aiokafka
        reads the value from its fetcher for every request it builds; it has no public
        setter, so a version without that attribute keeps the value it started with.
        """
        fetcher = getattr(self._kafka, "_fetcher", None)
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = wait_ms

    def _dispatch(self, partition: TopicPartition, records: list[Any]) -> asyncio.Task[None]:
        self._kafka.pause(partition)
        CONSUMER_BATCH_RECORDS.labels(self.group_id).observe(len(records))
        task = asyncio.create_task(self._work(partition, records))
        self._in_flight[partition] = task
        return task

    async def _work(self, partition: TopicPartition, records: list[Any]) -> None:
        async with self._slots:
            await self._applier.apply(records)
        # The batch is committed in the database: its offset may be committed now. It is
        # handed to the committer, which commits every partition done meanwhile in one
        # request, and the partition goes on at once.
        self._pending_commits[partition] = records[-1].offset + 1
        self._commit_wanted.set()
        self._in_flight.pop(partition, None)
        if partition in self._kafka.assignment():
            self._kafka.resume(partition)
        self._record_lag(partition, records[-1].offset)

    async def _commit_continuously(self) -> None:
        """Commit the offsets of finished batches, coalesced: one request for every
        partition finished since the last one (an OffsetCommit per batch cost the embedded
        broker a fifth of its work under load)."""
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            if not await self._commit_pending(None):
                # The broker is away: the offsets wait for the next try, not a busy loop.
                await asyncio.sleep(COMMIT_RETRY_PAUSE_S)

    async def _commit_pending(self, partitions: set[TopicPartition] | None) -> bool:
        """Commit the pending offsets of `partitions` (all when None). Returns False when
        the broker could not be reached (the offsets stay pending)."""
        offsets = {
            partition: offset
            for partition, offset in self._pending_commits.items()
            if partitions is None or partition in partitions
        }
        if not offsets:
            return True
        for partition in offsets:
            del self._pending_commits[partition]
        try:
            async with asyncio.timeout(self._stop_wait_s):
                await self._kafka.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another member: it re-reads from the last committed
            # offsets, and the inbox makes the repeat harmless.
            log.warning("consumer_commit_skipped", count=len(offsets), error=repr(error))
        except (KafkaError, TimeoutError) as error:
            # Tried again with the next commit, unless newer offsets replaced them.
            log.warning("consumer_commit_failed", count=len(offsets), error=repr(error))
            for partition, offset in offsets.items():
                self._pending_commits.setdefault(partition, offset)
            self._commit_wanted.set()
            return False
        return True

    def _raise_failed(self) -> None:
        for partition, task in list(self._in_flight.items()):
            if task.done():
                self._in_flight.pop(partition, None)
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error

    async def finish_in_flight(self, partitions: set[TopicPartition]) -> None:
        """Give the batches of `partitions` in flight `revoke_wait_s` to finish (then cancel
        them), and commit what they finished while the partitions are still ours."""
        tasks = [task for tp, task in self._in_flight.items() if tp in partitions]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self._revoke_wait_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for tp in partitions:
                self._in_flight.pop(tp, None)
        await self._commit_pending(partitions)

    def _record_lag(self, partition: TopicPartition, offset: int) -> None:
        # The high watermark comes with every fetch response, so this costs no request.
        watermark = self._kafka.highwater(partition)
        if watermark is not None:
            inbox_name = self._applier.subscriptions[partition.topic].inbox_name
            CONSUMER_LAG.labels(inbox_name, partition.topic, str(partition.partition)).set(
                max(watermark - offset - 1, 0)
            )


def subscription_topics(
    subscriptions: Iterable[Subscription], prefix: str
) -> dict[str, Subscription]:
    """The subscriptions by broker-side topic name."""
    return {topic_name(subscription.topic, prefix): subscription for subscription in subscriptions}
