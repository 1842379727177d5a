"""The Idempotency-Key claim itself, on PostgreSQL: the first request claims a key, the
same request again gets what the first stored, another request under the same key is
refused with 422 `idempotency_key_reused`, and a key past its retention is free again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.common.db import Connection, apply_migrations, create_pool, load_migrations
from services.common.service import RUNTIME_MIGRATIONS
from services.common.settings import ServiceSettings
from services.gateway.domain import request_fingerprint
from services.gateway.idempotency import StoredRequest, claim, remember_response
from services.gateway.problems import ApiProblem

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RETENTION = timedelta(hours=24)


@pytest.fixture
async def pool(settings: ServiceSettings) -> AsyncIterator[asyncpg.Pool]:
    migrations = load_migrations(RUNTIME_MIGRATIONS, "services.gateway.migrations")
    await apply_migrations(settings.database_url, "gateway", migrations)
    pool = await create_pool(settings.database_url, "gateway", size_max=2)
    yield pool
    await pool.close()


async def claim_as(
    connection: Connection,
    merchant_id: str,
    fingerprint: bytes,
    resource_id: str,
    now: datetime = NOW,
) -> StoredRequest | None:
    return await claim(
        connection,
        merchant_id=merchant_id,
        key="k-1",
        fingerprint=fingerprint,
        resource_id=resource_id,
        now=now,
        retention=RETENTION,
    )


async def test_a_key_reused_for_another_request_is_refused_at_the_claim(
    pool: asyncpg.Pool,
) -> None:
    first = request_fingerprint("POST", "/v1/payments", {"amount": 100, "currency": "CNY"})
    other = request_fingerprint("POST", "/v1/payments", {"amount": 101, "currency": "CNY"})
    assert first != other
    async with pool.acquire() as connection:
        assert await claim_as(connection, "mch_a", first, "pay_1") is None
    await remember_response(
        pool, merchant_id="mch_a", key="k-1", status=201, body_json='{"id": "pay_1"}'
    )
    async with pool.acquire() as connection:
        again = await claim_as(connection, "mch_a", first, "pay_2")
        assert again is not None
        assert (again.resource_id, again.response_status) == ("pay_1", 201)
        with pytest.raises(ApiProblem) as refused:
            await claim_as(connection, "mch_a", other, "pay_3")
        assert (refused.value.status, refused.value.code) == (422, "idempotency_key_reused")
        # Another merchant's key of the same name is its own.
        assert await claim_as(connection, "mch_b", other, "pay_4") is None
        # Past its retention the key names a new request.
        later = NOW + RETENTION + timedelta(seconds=1)
        assert await claim_as(connection, "mch_a", other, "pay_5", later) is None
