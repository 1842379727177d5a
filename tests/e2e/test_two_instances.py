"""Two instances of every consuming service on one broker and one database: a second
instance joins under load, then one of each pair is killed (SIGKILL). Every payment
reaches its final state, no event applies twice, the ledger sums to zero per currency,
and a rebuild from the event log equals the live ledger."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.common.infrastructure import free_port
from services.common.launcher import LauncherSettings, Platform, PlatformInfo
from services.common.settings import ServiceSettings
from services.ledger.rebuild import rebuild_and_compare
from tests.e2e.conftest import _create_database
from tests.e2e.helpers import SMALL_POOLS, eventually, new_payment
from tests.infrastructure import with_database

CONSUMING_SERVICES = ("payment_center", "ledger", "risk", "notifier", "gateway", "connector")
PAYMENT_COUNT = 60


@pytest.fixture(scope="module")
def replicated(
    kafka: str,
    kafka_settings: dict[str, object],
    postgres_admin: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    database = f"payrail_e2e_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_database(postgres_admin, database))
    state_dir: Path = tmp_path_factory.mktemp("replicated")
    service_settings = ServiceSettings(
        **kafka_settings,  # type: ignore[arg-type]
        kafka_topic_prefix=f"e2e{uuid.uuid4().hex[:8]}.",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka)
        for name, value in SMALL_POOLS.items():
            patch.setenv(name, value)
        # Two of every service (thirteen processes) beside another worker's platform must
        # fit the 100 connections of a default PostgreSQL: two each.
        patch.setenv("PAYRAIL_DATABASE_POOL_SIZE_MAX", "2")
        patch.setenv("DATABASE_URL", with_database(postgres_admin, database))
        running = Platform(LauncherSettings.on_free_ports(state_dir), service_settings)
        running.start()
    try:
        yield running
    finally:
        running.stop()


def pay_one(info: PlatformInfo) -> str:
    with httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.demo_api_key}"},
        timeout=30.0,
    ) as api:
        created = api.post(
            "/v1/payments",
            json=new_payment(),
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert created.status_code == 201, created.text
        payment_id: str = created.json()["id"]

        def payable() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(f"/v1/payments/{payment_id}").json()
            return body if body.get("next_action") else None

        pay_url = eventually(payable, timeout_s=60, what="payable")["next_action"]["url"]
        assert httpx.post(pay_url, timeout=15).status_code == 200
    return payment_id


async def ledger_facts(database_url: str) -> tuple[dict[str, int], int, int]:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        sums = {
            row["currency"].strip(): row["total"]
            for row in await connection.fetch(
                "SELECT currency, sum(balance_minor)::bigint AS total"
                " FROM ledger.account_balances GROUP BY currency"
            )
        }
        entries: int = await connection.fetchval(
            "SELECT count(*) FROM ledger.journal_entries WHERE kind = 'payment_succeeded'"
        )
        distinct_sources: int = await connection.fetchval(
            "SELECT count(DISTINCT source_event_id) FROM ledger.journal_entries"
            " WHERE kind = 'payment_succeeded'"
        )
    finally:
        await connection.close()
    return sums, entries, distinct_sources


def test_a_second_instance_joins_under_load_and_one_of_each_pair_is_killed(
    replicated: Platform,
) -> None:
    info = replicated.info
    assert info is not None
    payment_ids: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        payment_id = pay_one(info)
        with lock:
            payment_ids.append(payment_id)

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(one) for _ in range(PAYMENT_COUNT)]
        # Second instances join while payments flow.
        second = {
            name: replicated.start_another_instance(name, free_port())
            for name in CONSUMING_SERVICES
        }
        # Then one of each pair dies without warning: the first instance of every
        # consumer, and the second gateway (the load goes through the first one's port).
        for name in CONSUMING_SERVICES:
            replicated.kill(second[name] if name == "gateway" else name)
        for future in futures:
            future.result(timeout=180)
    assert len(payment_ids) == PAYMENT_COUNT

    with httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.demo_api_key}"},
        timeout=15.0,
    ) as api:

        def all_succeeded() -> bool:
            statuses = [api.get(f"/v1/payments/{pid}").json()["status"] for pid in payment_ids]
            return all(status == "succeeded" for status in statuses)

        eventually(all_succeeded, timeout_s=120, what="every payment succeeded")

    def ledger_caught_up() -> tuple[dict[str, int], int, int] | None:
        facts = asyncio.run(ledger_facts(info.database_url))
        return facts if facts[1] >= PAYMENT_COUNT else None

    sums, entries, distinct_sources = eventually(
        ledger_caught_up, timeout_s=60, what="every payment in the ledger"
    )
    assert entries == distinct_sources == PAYMENT_COUNT
    assert sums and all(total == 0 for total in sums.values()), sums
    _log, differences = asyncio.run(
        rebuild_and_compare(
            info.kafka_bootstrap_servers,
            info.database_url,
            replicated.service_settings.kafka_topic_prefix,
        )
    )
    assert differences == []
