"""The delivery log and its operations: list deliveries with their attempts, resend one
event, replay a time range of events to an endpoint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from services.common.clock import Clock
from services.common.db import Connection
from services.notifier.domain import (
    REPLAY_EVENT_COUNT_MAX,
    WILDCARD,
    DeliveryStatus,
    NotifierError,
    check_replay_range,
    subscribes_to,
)
from services.notifier.handlers import UnknownEndpoint, queue_deliveries

log = structlog.get_logger(__name__)


DELIVERY_LIST_LIMIT_MAX = 100

# ---------------------------------------------------------------------------------------
# Delivery log (queries)


@dataclass(frozen=True)
class Attempt:
    attempt_number: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    endpoint_id: str
    merchant_id: str
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    origin: str  # event (its first delivery), resend or replay
    attempts: tuple[Attempt, ...]


class InvalidCursor(NotifierError):
    """A `starting_after` that names no delivery of this merchant."""

    code = "invalid_cursor"


class UnknownEvent(NotifierError):
    """No event of this merchant has that id."""

    code = "event_not_found"


class EndpointDisabled(NotifierError):
    """The endpoint is disabled: enable it before sending to it."""

    code = "webhook_endpoint_disabled"


class NoSubscribedEndpoint(NotifierError):
    """No enabled endpoint of the merchant subscribes to the event's type."""

    code = "no_subscribed_endpoint"


class ReplayTooLarge(NotifierError):
    """More events in the range than one replay queues."""

    code = "replay_range_too_large"


async def _owned_endpoint(
    connection: Connection, endpoint_id: str, merchant_id: str, *, deleted_too: bool = False
) -> asyncpg.Record:
    row = await connection.fetchrow(
        "SELECT * FROM webhook_endpoints WHERE endpoint_id = $1 AND merchant_id = $2"
        " AND ($3 OR deleted_at IS NULL)",
        endpoint_id,
        merchant_id,
        deleted_too,
    )
    if row is None:
        raise UnknownEndpoint(f"no webhook endpoint {endpoint_id}")
    return row


async def list_deliveries(
    pool: asyncpg.Pool,
    *,
    merchant_id: str,
    event_id: uuid.UUID | None = None,
    endpoint_id: str | None = None,
    starting_after: str | None = None,
    limit: int = DELIVERY_LIST_LIMIT_MAX,
) -> list[Delivery]:
    """The merchant's deliveries, newest first (of one event and/or one endpoint, if given),
    each with its attempts; `starting_after` (a delivery id) continues a previous page.
    At most DELIVERY_LIST_LIMIT_MAX + 1 rows: ask for one more than a page to learn
    whether another follows.

    Raises UnknownEndpoint for an endpoint that is not the merchant's (a deleted one's
    history is still listed), InvalidCursor for an unknown cursor.
    """
    # One row more than a page may hold tells the caller whether another page follows.
    limit = max(1, min(limit, DELIVERY_LIST_LIMIT_MAX + 1))
    async with pool.acquire() as connection:
        if endpoint_id is not None:
            await _owned_endpoint(connection, endpoint_id, merchant_id, deleted_too=True)
        cursor = None
        if starting_after is not None:
            cursor = await connection.fetchrow(
                "SELECT created_at, delivery_id FROM webhook_deliveries"
                " WHERE delivery_id = $1 AND merchant_id = $2",
                starting_after,
                merchant_id,
            )
            if cursor is None:
                raise InvalidCursor(f"starting_after {starting_after!r} names no delivery")
        rows = await connection.fetch(
            "SELECT delivery_id, endpoint_id, merchant_id, event_id, event_type, status,"
            " attempt_count, next_attempt_at, created_at, delivered_at, origin"
            " FROM webhook_deliveries"
            " WHERE merchant_id = $1 AND ($2::uuid IS NULL OR event_id = $2)"
            " AND ($3::text IS NULL OR endpoint_id = $3)"
            " AND ($4::timestamptz IS NULL OR (created_at, delivery_id) < ($4, $5::text))"
            " ORDER BY created_at DESC, delivery_id DESC LIMIT $6",
            merchant_id,
            event_id,
            endpoint_id,
            cursor["created_at"] if cursor else None,
            cursor["delivery_id"] if cursor else None,
            limit,
        )
        attempt_rows = await connection.fetch(
            "SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[])"
            " ORDER BY delivery_id, attempt_number",
            [row["delivery_id"] for row in rows],
        )
    attempts: dict[str, list[Attempt]] = {}
    for row in attempt_rows:
        attempts.setdefault(row["delivery_id"], []).append(
            Attempt(
                attempt_number=row["attempt_number"],
                attempted_at=row["attempted_at"],
                succeeded=row["succeeded"],
                status_code=row["status_code"],
                latency_ms=row["latency_ms"],
                error=row["error"],
                response_excerpt=row["response_excerpt"],
            )
        )
    return [
        Delivery(
            delivery_id=row["delivery_id"],
            endpoint_id=row["endpoint_id"],
            merchant_id=row["merchant_id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            status=DeliveryStatus(row["status"]),
            attempt_count=row["attempt_count"],
            next_attempt_at=row["next_attempt_at"],
            created_at=row["created_at"],
            delivered_at=row["delivered_at"],
            origin=row["origin"],
            attempts=tuple(attempts.get(row["delivery_id"], ())),
        )
        for row in rows
    ]


async def resend_event(
    pool: asyncpg.Pool,
    *,
    merchant_id: str,
    event_id: uuid.UUID,
    endpoint_id: str | None,
    clock: Clock,
) -> int:
    """Queue a new delivery of one of the merchant's events, due now: to `endpoint_id`
    (whatever it subscribes to), or else to every enabled endpoint subscribed to the
    event's type. Returns how many deliveries were queued.

    Raises UnknownEvent, UnknownEndpoint, EndpointDisabled or NoSubscribedEndpoint.
    """
    async with pool.acquire() as connection, connection.transaction():
        event = await connection.fetchrow(
            "SELECT event_id, event_type, body FROM webhook_events"
            " WHERE event_id = $1 AND merchant_id = $2",
            event_id,
            merchant_id,
        )
        if event is None:
            raise UnknownEvent(f"no event {event_id}")
        if endpoint_id is not None:
            endpoint = await _owned_endpoint(connection, endpoint_id, merchant_id)
            if not endpoint["enabled"]:
                raise EndpointDisabled(f"webhook endpoint {endpoint_id} is disabled")
            targets = [endpoint_id]
        else:
            rows = await connection.fetch(
                "SELECT endpoint_id, events FROM webhook_endpoints"
                " WHERE merchant_id = $1 AND enabled ORDER BY endpoint_id",
                merchant_id,
            )
            targets = [
                row["endpoint_id"]
                for row in rows
                if subscribes_to(row["events"], event["event_type"])
            ]
            if not targets:
                raise NoSubscribedEndpoint(
                    f"no enabled webhook endpoint subscribes to {event['event_type']}"
                )
        queued = await queue_deliveries(
            connection,
            targets,
            [(event["event_id"], event["event_type"], event["body"])],
            "resend",
            clock.now(),
            clock,
        )
    log.info("webhook_event_resent", event_id=str(event_id), deliveries=queued)
    return queued


async def replay_events(
    pool: asyncpg.Pool,
    *,
    merchant_id: str,
    endpoint_id: str,
    start: datetime,
    end: datetime,
    clock: Clock,
) -> int:
    """Queue a new delivery, due now, to `endpoint_id` of each of the merchant's events
    that occurred in [start, end) and that the endpoint subscribes to, oldest first.
    Returns how many were queued.

    Raises ReplayRangeInvalid, UnknownEndpoint, EndpointDisabled, or ReplayTooLarge when
    the range holds more than REPLAY_EVENT_COUNT_MAX events.
    """
    check_replay_range(start, end)
    async with pool.acquire() as connection, connection.transaction():
        endpoint = await _owned_endpoint(connection, endpoint_id, merchant_id)
        if not endpoint["enabled"]:
            raise EndpointDisabled(f"webhook endpoint {endpoint_id} is disabled")
        rows = await connection.fetch(
            "SELECT event_id, event_type, body FROM webhook_events"
            " WHERE merchant_id = $1 AND occurred_at >= $2 AND occurred_at < $3"
            " AND ($4 = ANY($5::text[]) OR event_type = ANY($5::text[]))"
            " ORDER BY occurred_at, event_id LIMIT $6",
            merchant_id,
            start,
            end,
            WILDCARD,
            list(endpoint["events"]),
            REPLAY_EVENT_COUNT_MAX + 1,
        )
        if len(rows) > REPLAY_EVENT_COUNT_MAX:
            raise ReplayTooLarge(
                f"more than {REPLAY_EVENT_COUNT_MAX} events in the range; replay a shorter one"
            )
        queued = await queue_deliveries(
            connection,
            [endpoint_id],
            [(row["event_id"], row["event_type"], row["body"]) for row in rows],
            "replay",
            clock.now(),
            clock,
        )
    log.info("webhook_events_replayed", endpoint_id=endpoint_id, deliveries=queued)
    return queued
