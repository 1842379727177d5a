"""The whole platform as OS processes, started by the launcher `make run` uses."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.common.launcher import LauncherSettings, Platform, PlatformInfo
from services.common.settings import ServiceSettings
from tests.e2e.helpers import SMALL_POOLS, eventually, new_payment
from tests.infrastructure import with_database
from tests.support.webhook_receiver import Route, WebhookReceiver


async def _create_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


OPS_PATH = "/ops"
OPS_SECRET = f"whsec_ops_{uuid.uuid4().hex}"


@pytest.fixture(scope="package")
def ops_receiver() -> Iterator[WebhookReceiver]:
    """Operations' webhook receiver, up before the platform that sends to it."""
    with WebhookReceiver() as receiver:
        receiver.route(OPS_PATH, Route(secrets=[OPS_SECRET]))
        yield receiver


def warm_up(running: Platform) -> None:
    """Wait until one payment reaches the payer step: the services answer /readyz before
    their consumers have joined their groups, and the first test must not pay for that."""
    info = running.info
    assert info is not None
    with httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.demo_api_key}"},
        timeout=15.0,
    ) as client:
        created = client.post("/v1/payments", json=new_payment(amount=100))
        created.raise_for_status()
        payment_id = created.json()["id"]
        eventually(
            lambda: client.get(f"/v1/payments/{payment_id}").json()["status"] == "requires_payment",
            timeout_s=60,
            what="a first payment to reach the payer step",
        )


@pytest.fixture(scope="package")
def extra_platform_env() -> dict[str, str]:
    """Settings a package's platform adds to the ones below (tests/faults shortens the
    channel timeout, for instance)."""
    return {}


@pytest.fixture(scope="package")
def platform(
    extra_platform_env: dict[str, str],
    ops_receiver: WebhookReceiver,
    kafka: str,
    kafka_settings: dict[str, object],
    postgres_admin: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    database = f"payrail_e2e_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_database(postgres_admin, database))
    state_dir: Path = tmp_path_factory.mktemp("platform")
    launcher_settings = LauncherSettings.on_free_ports(state_dir)
    service_settings = ServiceSettings(
        **kafka_settings,  # type: ignore[arg-type]
        kafka_topic_prefix=f"e2e{uuid.uuid4().hex[:8]}.",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka)
        for name, value in SMALL_POOLS.items():
            patch.setenv(name, value)
        patch.setenv("DATABASE_URL", with_database(postgres_admin, database))
        # Notifications and webhook retries compressed so failures show within a test.
        patch.setenv("PAYRAIL_PSP_NOTIFY_RETRY_SCHEDULE_MS", "[0, 200, 500, 1000, 2000]")
        patch.setenv("PAYRAIL_WEBHOOK_RETRY_SCHEDULE_MS", "[0, 200, 500, 1000, 2000, 4000]")
        # An endpoint failing every attempt for 2.5 s is disabled (attempts at about
        # 0, 0.2, 0.7, 1.7 and 3.7 s: the fifth disables it, the sixth waits for it).
        patch.setenv("PAYRAIL_WEBHOOK_DISABLE_AFTER_MS", "2500")
        patch.setenv("PAYRAIL_WEBHOOK_ENDPOINT_CONCURRENCY_MAX", "2")
        # Long enough that a held request is still in flight while a test looks.
        patch.setenv("PAYRAIL_WEBHOOK_TIMEOUT_MS", "15000")
        patch.setenv("PAYRAIL_OPS_WEBHOOK_URL", ops_receiver.url(OPS_PATH))
        patch.setenv("PAYRAIL_OPS_WEBHOOK_SECRET", OPS_SECRET)
        # A notification overdue after three seconds is queried at the channel (later than
        # a test payment that expires after one second, so its late notice stays late).
        patch.setenv("PAYRAIL_CHANNEL_QUERY_SCHEDULE_MS", "[3000, 2000]")
        patch.setenv("PAYRAIL_EXPIRY_POLL_INTERVAL_MS", "200")
        patch.setenv("PAYRAIL_PSP_REFUND_PROCESSING_MS", "100")
        # Three failed calls open a channel's circuit for three seconds.
        patch.setenv("PAYRAIL_CHANNEL_CIRCUIT_FAILURE_THRESHOLD", "3")
        patch.setenv("PAYRAIL_CHANNEL_CIRCUIT_OPEN_MS", "3000")
        for name, value in extra_platform_env.items():
            patch.setenv(name, value)
        running = Platform(launcher_settings, service_settings)
        running.start()
    try:
        warm_up(running)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="package")
def info(platform: Platform) -> PlatformInfo:
    assert platform.info is not None
    return platform.info


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def api(info: PlatformInfo) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=info.api_base_url,
        headers={"Authorization": f"Bearer {info.demo_api_key}"},
        timeout=15.0,
    ) as client:
        yield client


class PspFaults:
    """Switch the PSP simulator's faults per channel; every test starts and ends without."""

    def __init__(self, psp_base_url: str) -> None:
        self._url = psp_base_url

    def set(self, channel: str, **faults: object) -> None:
        answer = httpx.put(f"{self._url}/_sim/faults/{channel}", json=faults, timeout=5)
        answer.raise_for_status()

    def reset(self) -> None:
        httpx.delete(f"{self._url}/_sim/faults", timeout=5).raise_for_status()


@pytest.fixture
def psp_faults(info: PlatformInfo) -> Iterator[PspFaults]:
    faults = PspFaults(info.psp_base_url)
    faults.reset()
    try:
        yield faults
    finally:
        faults.reset()
