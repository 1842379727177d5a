"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.service import RUNTIME_MIGRATIONS
from services.common.settings import ServiceSettings


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client for one test, closed when the test ends."""
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def notifier_pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    """The notifier's schema, migrated, without the rest of the process."""
    await apply_migrations(
        settings.database_url,
        "notifier",
        load_migrations(RUNTIME_MIGRATIONS, "services.notifier.migrations"),
    )
    pool = await create_pool(settings.database_url, "notifier")
    yield pool
    await pool.close()
