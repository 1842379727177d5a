"""Kafka plumbing: the broker factory, topic creation, the relay's publisher, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream.kafka import KafkaBroker

from schemas import Topic, topic_name
from services.common.dead_letters import DeadLetter
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
    """Create every payrail topic that does not exist yet. Returns the names created.

    Topics keep every record for ever (`retention.ms` and `retention.bytes` -1): the topics
    are the replayable history analysts and `payrail ledger rebuild` read, and Kafka's
    default would delete records after seven days. The replication factor is
    `kafka_topic_replication_factor`, else 3 on a cluster of three brokers or more and 1
    below; with three copies a write needs two (`min.insync.replicas`), so an
    acknowledged record survives the loss of one broker. Topics that exist are left as
    they are.

    Raises KafkaError when the cluster refuses to create a topic (a replication factor
    larger than the cluster, for example) and TimeoutError after `timeout_s` per request.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        wanted = [topic_name(topic, settings.kafka_topic_prefix) for topic in Topic]
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        replication_factor = settings.kafka_topic_replication_factor
        if replication_factor is None:
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
            replication_factor = 3 if len(cluster["brokers"]) >= 3 else 1
        configs = {"retention.ms": "-1", "retention.bytes": "-1"}
        if replication_factor >= 3:
            configs["min.insync.replicas"] = "2"
        answer = await asyncio.wait_for(
            admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=settings.kafka_topic_partitions,
                        replication_factor=replication_factor,
                        topic_configs=configs,
                    )
                    for name in missing
                ]
            ),
            timeout_s,
        )
        created: list[str] = []
        for name, error_code, *detail in answer.topic_errors:
            error_type = kafka_errors.for_code(error_code)
            if error_type is kafka_errors.NoError:
                created.append(name)
            elif error_type is not kafka_errors.TopicAlreadyExistsError:
                # Another service creating the same topic at this moment is no error.
                raise error_type(f"creating topic {name}: {detail}")
        if created:
            log.info("topics_created", topics=created, replication_factor=replication_factor)
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
    """Copies a dead letter, unchanged, to the dead-letter topic with the reason in headers.

    The dead letter's row in the consuming service's schema is the record an operator
    acts on; this copy lets stream watchers see it as it happens.
    """

    def __init__(self, broker: KafkaBroker, topic_prefix: str) -> None:
        self._broker = broker
        self._topic = topic_name(Topic.DEAD_LETTERS, topic_prefix)

    async def copy(self, letter: DeadLetter) -> None:
        await self._broker.publish(
            letter.body,
            topic=self._topic,
            key=letter.message_key,
            headers={
                "dead_letter_reason": letter.reason[:2000],
                "dead_letter_consumer": letter.consumer,
                "source_topic": letter.source_topic,
                "source_partition": str(letter.source_partition),
                "source_offset": str(letter.source_offset),
            },
        )
