"""Every Kafka topic payrail uses, named once. Nothing else spells a topic name."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    ORDERS = "orders"
    MERCHANTS_EVENTS = "merchants.events"
    PAYMENTS_COMMANDS = "payments.commands"
    PAYMENTS_EVENTS = "payments.events"
    RISK_DECISIONS = "risk.decisions"
    CHANNEL_COMMANDS = "channel.commands"
    CHANNEL_RESULTS = "channel.results"
    LEDGER_EVENTS = "ledger.events"
    NOTIFIER_EVENTS = "notifier.events"
    OPERATIONS_EVENTS = "operations.events"
    DEAD_LETTERS = "dead_letters"


def topic_name(topic: Topic, prefix: str = "") -> str:
    """The broker-side name of `topic`.

    A prefix namespaces one deployment's topics on a shared cluster (and keeps
    parallel test runs apart); production runs use the empty prefix.
    """
    return f"{prefix}{topic.value}"
