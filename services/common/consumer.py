"""The idempotent consumer: inbox de-duplication, bounded retries and dead letters.

For every record read from Kafka:
1. A body that is not a valid message goes to the dead-letter topic with the reason; the
   consumer moves on.
2. A message whose type this consumer does not handle is skipped.
3. Otherwise the inbox row (consumer, message id) and the handler's effect are written
   in ONE transaction. A redelivered message finds its inbox row and changes nothing.
4. A transient error (database or network away, an optimistic-concurrency conflict) is
   retried with backoff; after `retry_count_max` attempts the record is not acknowledged
   and Kafka redelivers it, so nothing accepted is lost. Any other error is a poison
   message: it goes to the dead-letter topic and the consumer keeps going.

Offsets are committed only after the transaction committed (FastStream's ack policy
NACK_ON_ERROR: acknowledge after the handler returns, rewind when it raises).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import asyncpg
import structlog
from aiokafka import TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from schemas import Message, Topic, UndecodableMessage, decode, topic_name
from services.common.broker import DeadLetterPublisher
from services.common.event_store import ConcurrencyConflict
from services.common.invariant import InvariantViolation
from services.common.metrics import CONSUMER_LAG, MESSAGE_HANDLING_SECONDS, MESSAGES_CONSUMED
from services.common.settings import ServiceSettings

log = structlog.get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Any], Awaitable[None]]


class TransientError(Exception):
    """Raised by a handler when the same message may succeed later (a channel timed out)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    ConcurrencyConflict,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.TooManyConnectionsError,
)


class RetriesExhausted(Exception):
    """A transient error outlasted the retries; the record is rewound and redelivered."""


def _peek_type(body: bytes) -> str | None:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    name = raw.get("event_type", raw.get("command_type"))
    return name if isinstance(name, str) else None


class InboxConsumer:
    def __init__(
        self,
        *,
        name: str,
        topic: Topic,
        pool: asyncpg.Pool,
        handlers: Mapping[type[Message], Handler],
        dead_letters: DeadLetterPublisher,
        retry_count_max: int = 5,
        retry_backoff_ms: int = 50,
    ) -> None:
        self.name = name
        self.topic = topic
        self._pool = pool
        self._handlers = dict(handlers)
        self._handled_type_names = frozenset(
            cls.model_fields[
                "event_type" if "event_type" in cls.model_fields else "command_type"
            ].default
            for cls in handlers
        )
        self._dead_letters = dead_letters
        self._retry_count_max = retry_count_max
        self._retry_backoff_s = retry_backoff_ms / 1000

    async def handle_record(
        self, *, body: bytes, key: bytes | None, source_topic: str, partition: int, offset: int
    ) -> None:
        """Apply one Kafka record exactly once. Raises RetriesExhausted to have it redelivered."""
        type_name = _peek_type(body)
        if type_name is not None and type_name not in self._handled_type_names:
            MESSAGES_CONSUMED.labels(self.name, "skipped").inc()
            return
        try:
            message = decode(self.topic, body)
        except UndecodableMessage as error:
            await self._dead_letters.send(
                body=body,
                key=key,
                source_topic=source_topic,
                partition=partition,
                offset=offset,
                reason=f"undecodable: {error}",
            )
            MESSAGES_CONSUMED.labels(self.name, "dead_lettered").inc()
            return
        handler = self._handlers[type(message)]
        with structlog.contextvars.bound_contextvars(
            correlation_id=message.correlation_id,
            message_id=str(message.message_id),
            message_type=message.message_type,
            consumer=self.name,
        ):
            await self._apply_with_retries(
                message, handler, body, key, source_topic, partition, offset
            )

    async def _apply_with_retries(
        self,
        message: Message,
        handler: Handler,
        body: bytes,
        key: bytes | None,
        source_topic: str,
        partition: int,
        offset: int,
    ) -> None:
        last_error: BaseException | None = None
        for attempt in range(1, self._retry_count_max + 1):
            try:
                with MESSAGE_HANDLING_SECONDS.labels(self.name).time():
                    applied = await self._apply_once(message, handler)
                log.debug("message_applied" if applied else "message_duplicate_skipped")
                MESSAGES_CONSUMED.labels(self.name, "applied" if applied else "duplicate").inc()
                return
            except TRANSIENT_ERRORS as error:
                last_error = error
                log.warning("message_retry", attempt=attempt, error=repr(error))
                await asyncio.sleep(min(self._retry_backoff_s * 2 ** (attempt - 1), 5.0))
            except Exception as error:
                # A bug or an impossible message: park it with the reason instead of
                # blocking the partition forever. The dead-letter topic keeps it for replay.
                log.exception("message_poisoned")
                await self._dead_letters.send(
                    body=body,
                    key=key,
                    source_topic=source_topic,
                    partition=partition,
                    offset=offset,
                    reason=f"{type(error).__name__}: {error}",
                )
                MESSAGES_CONSUMED.labels(self.name, "dead_lettered").inc()
                return
        MESSAGES_CONSUMED.labels(self.name, "rewound").inc()
        raise RetriesExhausted(f"{self.name}: {last_error!r}")

    async def _apply_once(self, message: Message, handler: Handler) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            first_time = await connection.fetchval(
                "INSERT INTO inbox (consumer, message_id, topic) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                self.name,
                message.message_id,
                self.topic.value,
            )
            if not first_time:
                return False
            # A pool hands out a proxy that forwards every call to the real connection.
            await handler(cast(asyncpg.Connection, connection), message)
            return True


async def _raw_body(message: Any) -> Any:
    # Hand the handler the undecoded bytes: decoding and validation are ours, so a
    # malformed body reaches the dead-letter path instead of failing inside the framework.
    return message.body


def subscribe(
    broker: KafkaBroker, settings: ServiceSettings, consumer: InboxConsumer, group_id: str
) -> None:
    """Register `consumer` on `broker` with explicit group, offset reset and ack policy."""

    @broker.subscriber(
        topic_name(consumer.topic, settings.kafka_topic_prefix),
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=100,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        decoder=_raw_body,
        title=f"{group_id}:{consumer.topic.value}",
    )
    async def on_record(body: bytes, message: KafkaMessage) -> None:
        record = message.raw_message
        if isinstance(record, tuple):
            raise InvariantViolation("a batch reached a single-record subscriber")
        await consumer.handle_record(
            body=body,
            key=record.key,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        _record_lag(consumer.name, message.consumer, record.topic, record.partition, record.offset)


def _record_lag(name: str, kafka_consumer: Any, topic: str, partition: int, offset: int) -> None:
    # The high watermark comes with every fetch response, so this costs no request.
    highwater = getattr(kafka_consumer, "highwater", None)
    if highwater is None:
        return
    watermark = highwater(TopicPartition(topic, partition))
    if watermark is not None:
        CONSUMER_LAG.labels(name, topic, str(partition)).set(max(watermark - offset - 1, 0))
