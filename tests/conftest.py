from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from services.common.broker import ensure_topics
from services.common.settings import ServiceSettings
from tests.infrastructure import (
    kafka_bootstrap_servers,
    kafka_client_settings,
    postgres_admin_dsn,
    with_database,
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings come from the environment: a developer's shell must not leak into tests.
    import os

    for name in list(os.environ):
        if name.startswith("PAYRAIL_") and name != "PAYRAIL_TEST_DATABASE_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[tuple[str, bool]]:
    with kafka_bootstrap_servers() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka(kafka_broker: tuple[str, bool]) -> str:
    return kafka_broker[0]


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: tuple[str, bool]) -> dict[str, object]:
    """ServiceSettings fields that fit the broker under test."""
    return kafka_client_settings(*kafka_broker)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    with postgres_admin_dsn() as dsn:
        yield dsn


@pytest.fixture
async def database_url(postgres_admin: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"payrail_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(postgres_admin, name)
    admin = await asyncpg.connect(postgres_admin, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def settings(kafka_settings: dict[str, object], database_url: str) -> ServiceSettings:
    """Settings for one test: its own database and its own topic namespace."""
    test_settings = ServiceSettings(
        **kafka_settings,  # type: ignore[arg-type]
        database_url=database_url,
        kafka_topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        log_format="console",
    )
    await ensure_topics(test_settings)
    return test_settings
