"""Kafka plumbing: the broker factory, topic creation, the relay's publisher, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from schemas import Topic, topic_name
from services.common.outbox import OutboundRecord
from services.common.settings import ServiceSettings

log = structlog.get_logger(__name__)


class PayrailKafkaBroker(KafkaBroker):
    """FastStream's Kafka broker, starting its subscribers side by side.

    Starting an aiokafka consumer waits until its group has joined, and the broker holds a
    new group's join for a while (Apache Kafka's group.initial.rebalance.delay.ms, 3 s by
    default; the embedded broker waits 5 s). FastStream starts subscribers one after the
    other, so a service with one consumer group per topic waited that delay once per topic
    (20 s for the notifier's four); started together, the joins overlap.
    """

    async def start(self) -> None:
        await self.connect()
        # A TaskGroup cancels the other starts when one fails, and raises that failure.
        async with asyncio.TaskGroup() as starting:
            for subscriber in self.subscribers:
                starting.create_task(subscriber.start())
        for publisher in self.publishers:
            await publisher.start()
        self.running = True


def build_broker(settings: ServiceSettings, client_id: str) -> KafkaBroker:
    """A FastStream Kafka broker with every producer option stated, not defaulted."""
    return PayrailKafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=0,
        # Not "faststream": FastStream gives that logger its own coloured handler.
        logger=structlog.get_logger("payrail.broker"),
    )


async def ensure_topics(settings: ServiceSettings, timeout_s: float = 30.0) -> list[str]:
    """Create every payrail topic that does not exist yet. Returns the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        wanted = [topic_name(topic, settings.kafka_topic_prefix) for topic in Topic]
        missing = [name for name in wanted if name not in existing]
        created: list[str] = []
        for name in missing:
            try:
                await asyncio.wait_for(
                    admin.create_topics(
                        [
                            NewTopic(
                                name,
                                num_partitions=settings.kafka_topic_partitions,
                                replication_factor=1,
                            )
                        ]
                    ),
                    timeout_s,
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


class KafkaRecordPublisher:
    """Publishes outbox records through a started FastStream broker."""

    def __init__(self, broker: KafkaBroker, timeout_s: float = 15.0) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def publish_batch(self, records: Sequence[OutboundRecord]) -> None:
        # Send the whole batch without waiting in between (the producer keeps per-partition
        # order), then wait for every acknowledgement.
        futures = [
            await self._broker.publish(
                record.body,
                topic=record.topic,
                key=record.key.encode(),
                headers=record.headers,
                no_confirm=True,
            )
            for record in records
        ]
        await asyncio.wait_for(asyncio.gather(*futures), self._timeout_s)


class DeadLetterPublisher:
    """Sends an unprocessable message, unchanged, to the dead-letter topic with the reason."""

    def __init__(self, broker: KafkaBroker, topic_prefix: str, consumer: str) -> None:
        self._broker = broker
        self._topic = topic_name(Topic.DEAD_LETTERS, topic_prefix)
        self._consumer = consumer

    async def send(
        self,
        *,
        body: bytes,
        key: bytes | None,
        source_topic: str,
        partition: int,
        offset: int,
        reason: str,
    ) -> None:
        await self._broker.publish(
            body,
            topic=self._topic,
            key=key,
            headers={
                "dead_letter_reason": reason[:2000],
                "dead_letter_consumer": self._consumer,
                "source_topic": source_topic,
                "source_partition": str(partition),
                "source_offset": str(offset),
            },
        )
        log.warning(
            "message_dead_lettered",
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            reason=reason[:500],
        )
