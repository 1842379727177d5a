"""Idempotency-Key for every POST that creates something (a payment, a refund).

The first request with a key claims it in the same transaction as the command it sends;
its answer is stored when it is known. A repeat with the same key and the same request
gets the stored answer (status and body) for the retention period; a repeat with another
request is refused with `idempotency_key_reused`. Two concurrent requests with one key
serialise on the key's row, so only one of them creates anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import Header, Request
from pydantic import BaseModel

from services.common.db import Connection
from services.common.invariant import InvariantViolation
from services.gateway.domain import request_fingerprint
from services.gateway.problems import ApiProblem

KeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Client-chosen key."),
]


@dataclass(frozen=True)
class StoredRequest:
    resource_id: str
    response_status: int | None
    response_body: Any


@dataclass(frozen=True)
class KeyedRequest:
    """A POST that carries an Idempotency-Key: whose key it is and what was asked."""

    merchant_id: str
    key: str
    fingerprint: bytes
    retention: timedelta

    async def claim(
        self, connection: Connection, resource_id: str, now: datetime
    ) -> StoredRequest | None:
        """See `claim`."""
        return await claim(
            connection,
            merchant_id=self.merchant_id,
            key=self.key,
            fingerprint=self.fingerprint,
            resource_id=resource_id,
            now=now,
            retention=self.retention,
        )

    async def remember(self, pool: asyncpg.Pool, status: int, body: BaseModel) -> None:
        await remember_response(
            pool,
            merchant_id=self.merchant_id,
            key=self.key,
            status=status,
            body_json=body.model_dump_json(),
        )


def keyed_request(
    request: Request, merchant_id: str, key: str | None, body: BaseModel | None
) -> KeyedRequest | None:
    """The request's Idempotency-Key with the fingerprint of its method, path and body, or
    None when the request carries no key."""
    if key is None:
        return None
    fingerprint = request_fingerprint(
        request.method, request.url.path, body.model_dump(mode="json") if body else {}
    )
    settings = request.app.state.gateway_settings
    return KeyedRequest(
        merchant_id=merchant_id,
        key=key,
        fingerprint=fingerprint,
        retention=timedelta(hours=settings.idempotency_key_retention_hours),
    )


async def claim(
    connection: Connection,
    *,
    merchant_id: str,
    key: str,
    fingerprint: bytes,
    resource_id: str,
    now: datetime,
    retention: timedelta,
) -> StoredRequest | None:
    """Claim `key` for a new request naming `resource_id`; None when claimed. A key older
    than `retention` is free again. Otherwise returns what the first request stored.

    Raises ApiProblem 422 `idempotency_key_reused` when the key named another request.
    """
    claimed = await connection.fetchval(
        "INSERT INTO idempotency_keys"
        " (merchant_id, idempotency_key, request_hash, resource_id, created_at)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (merchant_id, idempotency_key) DO UPDATE SET"
        " request_hash = EXCLUDED.request_hash, resource_id = EXCLUDED.resource_id,"
        " response_status = NULL, response_body = NULL, created_at = EXCLUDED.created_at"
        " WHERE idempotency_keys.created_at < $6 RETURNING true",
        merchant_id,
        key,
        fingerprint,
        resource_id,
        now,
        now - retention,
    )
    if claimed:
        return None
    row = await connection.fetchrow(
        "SELECT request_hash, resource_id, response_status, response_body FROM idempotency_keys"
        " WHERE merchant_id = $1 AND idempotency_key = $2",
        merchant_id,
        key,
    )
    if row is None:
        raise InvariantViolation("an idempotency key that conflicted has no row")
    if row["request_hash"] != fingerprint:
        raise ApiProblem(
            422,
            "idempotency_key_reused",
            "Idempotency-Key reused",
            "This Idempotency-Key was used with a different request.",
        )
    return StoredRequest(row["resource_id"], row["response_status"], row["response_body"])


async def remember_response(
    pool: asyncpg.Pool, *, merchant_id: str, key: str, status: int, body_json: str
) -> None:
    await pool.execute(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4::text::jsonb"
        " WHERE merchant_id = $1 AND idempotency_key = $2",
        merchant_id,
        key,
        status,
        body_json,
    )
