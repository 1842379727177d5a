"""`payrail ledger rebuild`: replay the event log into a fresh projection of balances and
compare every balance with the live ledger's.

The event log is the `payments.events` topic (payments and refunds) and the ledger's own
`ledger.events` (settlements and payouts, the ledger's decisions), each read from its
first record to the end it had when the rebuild started. Each money-moving event is turned
into its journal entry by the same pure rules the live ledger uses (`REPLAY_RULES`), once
per event id, so a redelivered event is not counted twice. Records the live ledger could
not decode (its consumer dead-letters them) are skipped and counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import Event, Topic, topic_name
from schemas.catalog import UndecodableMessage, decode
from services.ledger.domain import ADJUSTMENT_ENTRY_RULES, ENTRY_RULES, check_balanced
from services.ledger.payout_rules import PAYOUT_ENTRY_RULES
from services.ledger.settlement import SETTLEMENT_ENTRY_RULES

AccountKey = tuple[str, str]  # (account id, currency)

LEDGER_SCHEMA = "ledger"

# Every event that moves money, whichever service recorded it, and the entry it posts.
REPLAY_RULES = {
    **ENTRY_RULES,
    **SETTLEMENT_ENTRY_RULES,
    **PAYOUT_ENTRY_RULES,
    **ADJUSTMENT_ENTRY_RULES,
}
# The topics a rebuild reads, in this order (balances are sums: the order is not material).
LOG_TOPICS = (Topic.PAYMENTS_EVENTS, Topic.LEDGER_EVENTS)


@dataclass(frozen=True)
class BalanceDifference:
    account_id: str
    currency: str
    live_minor: int
    rebuilt_minor: int


@dataclass(frozen=True)
class EventLog:
    events: list[Event]
    undecodable_count: int


def project_balances(events: Iterable[Event]) -> dict[AccountKey, int]:
    """Every account's balance after `events`, each posted once by event id.

    Raises UnbalancedEntry when an event's entry does not balance (a bug in the rules).
    """
    posted: set[object] = set()
    balances: defaultdict[AccountKey, int] = defaultdict(int)
    for event in events:
        rule = REPLAY_RULES.get(type(event))
        if rule is None or event.event_id in posted:
            continue
        posted.add(event.event_id)
        postings = rule[1](event)
        if not postings:
            continue  # e.g. a settlement whose lines net to zero moves nothing
        check_balanced(postings)
        for posting in postings:
            balances[(posting.account_id, posting.currency)] += posting.amount_minor
    return dict(balances)


def balance_differences(
    live: dict[AccountKey, int], rebuilt: dict[AccountKey, int]
) -> list[BalanceDifference]:
    """The accounts whose balances differ, by account and currency; a missing account
    counts as a zero balance."""
    return [
        BalanceDifference(account_id, currency, live.get(key, 0), rebuilt.get(key, 0))
        for key in sorted(live.keys() | rebuilt.keys())
        for account_id, currency in (key,)
        if live.get(key, 0) != rebuilt.get(key, 0)
    ]


async def read_event_log(
    bootstrap: str, topic: Topic, topic_prefix: str = "", *, timeout_s: float = 60.0
) -> EventLog:
    """Every record of `topic` up to its end offsets at the start, decoded.

    Raises TimeoutError when the end is not reached within `timeout_s`.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    name = topic_name(topic, topic_prefix)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata that names the partitions
        partitions = [
            TopicPartition(name, number)
            for number in sorted(consumer.partitions_for_topic(name) or ())
        ]
        if not partitions:
            return EventLog(events=[], undecodable_count=0)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for partition in partitions:
            # Offset 0, or the earliest one kept when retention has removed it.
            consumer.seek(partition, 0)
        # Done by the offsets seen, not by the consumer's position: a partition is read
        # once its last record before the end is in hand.
        unread = {partition for partition, end in ends.items() if end > 0}
        events: list[Event] = []
        corrected: set[TopicPartition] = set()
        undecodable = 0
        deadline = time.monotonic() + timeout_s
        while unread:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not read to its end within {timeout_s} s")
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            for fetched in batch:
                # The embedded broker reports a partition's end as its last batch's first
                # offset + 1 when one batch holds several records; the high watermark of
                # the first fetch answer is the true end at the start.
                highwater = consumer.highwater(fetched)
                if fetched not in corrected and highwater is not None:
                    corrected.add(fetched)
                    ends[fetched] = max(ends[fetched], highwater)
            for records in batch.values():
                for record in records:
                    partition = TopicPartition(record.topic, record.partition)
                    if record.offset >= ends[partition] - 1:
                        unread.discard(partition)
                    if record.offset >= ends[partition]:
                        continue
                    try:
                        message = decode(topic, record.value or b"")
                    except UndecodableMessage:
                        undecodable += 1
                        continue
                    if isinstance(message, Event):
                        events.append(message)
        return EventLog(events=events, undecodable_count=undecodable)
    finally:
        await consumer.stop()


async def live_balances(database_url: str) -> dict[AccountKey, int]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            f"SELECT account_id, currency, balance_minor FROM {LEDGER_SCHEMA}.account_balances"
        )
    finally:
        await connection.close()
    return {(row["account_id"], row["currency"]): row["balance_minor"] for row in rows}


async def rebuild_and_compare(
    bootstrap: str, database_url: str, topic_prefix: str = ""
) -> tuple[EventLog, list[BalanceDifference]]:
    """Read the log, rebuild the balances and compare them with the live ones.

    The live balances are read after the log, so events the live ledger applied while
    the log was read show as differences; run it on a quiet ledger, or run it twice.
    """
    logs = [await read_event_log(bootstrap, topic, topic_prefix) for topic in LOG_TOPICS]
    log = EventLog(
        events=[event for one in logs for event in one.events],
        undecodable_count=sum(one.undecodable_count for one in logs),
    )
    live = await live_balances(database_url)
    return log, balance_differences(live, project_balances(log.events))


def run(bootstrap: str, database_url: str, topic_prefix: str = "") -> int:
    """The CLI: print the outcome; 0 when every balance matches, 1 otherwise."""
    log, differences = asyncio.run(rebuild_and_compare(bootstrap, database_url, topic_prefix))
    print(
        f"replayed {len(log.events)} events ({log.undecodable_count} undecodable skipped)",
        flush=True,
    )
    if not differences:
        print("every balance matches the event log")
        return 0
    print(f"{len(differences)} account balance(s) differ from the event log:")
    for difference in differences:
        print(
            f"  {difference.account_id} {difference.currency}:"
            f" live {difference.live_minor}, rebuilt {difference.rebuilt_minor}"
        )
    return 1
