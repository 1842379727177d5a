"""The restart promise, end to end: stopping the platform while a consumer lags behind loses
nothing, even though the embedded broker keeps memory only.

The ledger is paused while payments succeed, then the whole platform is stopped and
started again on the same database. With the embedded broker the second start has a new,
empty broker (a new cluster id): the relays publish every service's history to it again,
the ledger's consumer reads it from the beginning, and the ledger ends up with every
payment. With Apache Kafka the broker kept everything and the ledger simply catches up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord

from schemas import Topic, topic_name
from services.common.launcher import DEMO_MERCHANT_ID, LauncherSettings, Platform, PlatformInfo
from services.common.settings import ServiceSettings
from services.ledger import rebuild
from tests.e2e.helpers import SMALL_POOLS, balance_of, eventually, new_payment
from tests.infrastructure import with_database
from tests.support.kafka import read_topic

pytestmark = pytest.mark.e2e

PAYMENT_COUNT = 10
# 1999 at 60 basis points is a fee of 11.994, rounded half-even to 12.
MERCHANT_NET_MINOR = 1999 - 12
PAYMENT_EVENT_TYPES = [
    "PaymentCreated",
    "PaymentRiskApproved",
    "PaymentActionRequired",
    "PaymentSucceeded",
]


async def _execute(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _fetch_value(dsn: str, query: str, *arguments: object) -> Any:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return await connection.fetchval(query, *arguments)
    finally:
        await connection.close()


@pytest.fixture
def database_url(postgres_admin: str) -> Iterator[str]:
    """A database both starts of the platform use, dropped afterwards."""
    name = f"payrail_restart_{uuid.uuid4().hex[:10]}"
    asyncio.run(_execute(postgres_admin, f'CREATE DATABASE "{name}"'))
    yield with_database(postgres_admin, name)
    asyncio.run(_execute(postgres_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pay(api: httpx.Client) -> str:
    created = api.post(
        "/v1/payments", json=new_payment(), headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "requires_payment", payment
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200
    payment_id: str = payment["id"]
    return payment_id


def _status(api: httpx.Client, payment_id: str) -> str:
    status: str = api.get(f"/v1/payments/{payment_id}").json()["status"]
    return status


def _ledger_entry_count(database_url: str) -> int:
    count: int = asyncio.run(
        _fetch_value(
            database_url,
            "SELECT count(*) FROM ledger.journal_entries WHERE merchant_id = $1",
            DEMO_MERCHANT_ID,
        )
    )
    return count


def _client(info: PlatformInfo) -> httpx.Client:
    return httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.demo_api_key}"},
        timeout=15.0,
    )


def _pay_while_the_ledger_is_paused(platform: Platform, database_url: str) -> list[str]:
    """Start `platform`, pause its ledger, take payments to `succeeded`, then stop
    everything with the ledger killed while paused. Returns the payment ids."""
    info = platform.start()
    ledger_pid: int | None = None
    try:
        ledger_pid = platform.pid_of("ledger")
        os.kill(ledger_pid, signal.SIGSTOP)
        with _client(info) as api:
            payment_ids = [_pay(api) for _ in range(PAYMENT_COUNT)]
            eventually(
                lambda: all(_status(api, payment_id) == "succeeded" for payment_id in payment_ids),
                what="every payment to succeed",
            )
        # The ledger applied none of them: everything it will hold comes after the restart.
        assert _ledger_entry_count(database_url) == 0
    finally:
        # Killed while paused, so it cannot apply anything before its broker is gone.
        if ledger_pid is not None:
            os.kill(ledger_pid, signal.SIGKILL)
        platform.stop()
    return payment_ids


def test_payments_the_ledger_missed_before_a_restart_reach_it_after_the_restart(
    kafka_broker: tuple[str, bool],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap, is_apache_kafka = kafka_broker
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name, value in SMALL_POOLS.items():
        monkeypatch.setenv(name, value)
    if is_apache_kafka:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    else:
        # Each start of the platform runs its own embedded broker, as `make run` does.
        monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    launcher_settings = LauncherSettings.on_free_ports(tmp_path / "platform")
    service_settings = ServiceSettings(
        kafka_enable_idempotence=is_apache_kafka,
        kafka_topic_prefix=f"restart{uuid.uuid4().hex[:8]}.",
    )

    payment_ids = _pay_while_the_ledger_is_paused(
        Platform(launcher_settings, service_settings), database_url
    )
    first_cluster_id = _recorded_cluster_id(database_url)
    assert first_cluster_id is not None, "the relays never recorded the broker they publish to"

    second = Platform(launcher_settings, service_settings)
    second_info = second.start()
    try:
        with _client(second_info) as api:
            eventually(
                lambda: balance_of(api, "CNY")["pending"] == PAYMENT_COUNT * MERCHANT_NET_MINOR,
                timeout_s=60,
                what="the ledger to post every payment made before the restart",
            )
        assert _ledger_entry_count(database_url) == PAYMENT_COUNT

        # `payrail ledger rebuild` replays the new broker's topics: they hold the history.
        assert (
            rebuild.run(
                second_info.kafka_bootstrap_servers,
                database_url,
                service_settings.kafka_topic_prefix,
            )
            == 0
        )

        records = asyncio.run(
            read_topic(
                second_info.kafka_bootstrap_servers,
                topic_name(Topic.PAYMENTS_EVENTS, service_settings.kafka_topic_prefix),
                until=lambda seen: _all_succeeded(seen, payment_ids),
                timeout_s=30,
            )
        )
        for payment_id in payment_ids:
            assert _event_types(records, payment_id) == PAYMENT_EVENT_TYPES, payment_id

        # The embedded broker of the second start was a new, empty one; Apache Kafka kept
        # its data and its id, and nothing needed publishing again.
        second_cluster_id = _recorded_cluster_id(database_url)
        if is_apache_kafka:
            assert second_cluster_id == first_cluster_id
        else:
            assert second_cluster_id not in (None, first_cluster_id)
    finally:
        second.stop()


def _recorded_cluster_id(database_url: str) -> str | None:
    """The broker payment_center's relay last published to."""
    cluster_id: str | None = asyncio.run(
        _fetch_value(database_url, "SELECT cluster_id FROM payment_center.relay_broker_identity")
    )
    return cluster_id


def _event_types(records: list[ConsumerRecord], payment_id: str) -> list[str]:
    """The message types of `payment_id`'s records, in the order a reader received them."""
    return [
        dict(record.headers)["message_type"].decode()
        for record in records
        if record.key is not None and record.key.decode() == payment_id
    ]


def _all_succeeded(records: list[ConsumerRecord], payment_ids: list[str]) -> bool:
    return all(
        "PaymentSucceeded" in _event_types(records, payment_id) for payment_id in payment_ids
    )
