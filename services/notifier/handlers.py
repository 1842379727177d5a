"""The notifier's endpoint use cases: register, change, rotate and delete webhook
endpoints, and queue deliveries of each event to the endpoints subscribed to it.

Queueing happens in the consumer, inside the inbox transaction; sending never does (see
services.notifier.delivery).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import httpx
import structlog

from schemas.envelope import Event
from schemas.public_events import OPS_WEBHOOK_EVENTS
from services.common.clock import Clock
from services.common.db import Connection
from services.common.ids import new_prefixed_id, new_secret
from services.common.invariant import InvariantViolation
from services.notifier.domain import (
    ENDPOINT_COUNT_MAX_PER_MERCHANT,
    OPS_ENDPOINT_ID,
    OPS_MERCHANT_ID,
    InvalidUrl,
    NotifierError,
    PrivateTarget,
    check_endpoint_url,
    check_public_host,
    check_subscription,
    is_public_address,
    subscribes_to,
    webhook_body,
    webhook_event_type,
)

log = structlog.get_logger(__name__)


class EndpointLimitReached(NotifierError):
    """The merchant already has the most webhook endpoints one merchant may have."""

    code = "endpoint_limit_reached"


# ---------------------------------------------------------------------------------------
# Endpoints


@dataclass(frozen=True)
class WebhookEndpoint:
    endpoint_id: str
    merchant_id: str
    url: str
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None  # set when the notifier disabled it for failing


@dataclass(frozen=True)
class CreatedWebhookEndpoint:
    """An endpoint just registered, with the signing secret: the only time it is shown."""

    endpoint: WebhookEndpoint
    secret: str


def _endpoint(row: asyncpg.Record) -> WebhookEndpoint:
    return WebhookEndpoint(
        endpoint_id=row["endpoint_id"],
        merchant_id=row["merchant_id"],
        url=row["url"],
        events=tuple(row["events"]),
        enabled=row["enabled"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
    )


def check_sendable_url(url: str, allowed_hosts: Collection[str] = ()) -> str:
    """Return `url` when it is an http(s) URL with a host that the HTTP client can send to
    and that is not a private target (unless its host is on `allowed_hosts`).

    The domain's rules come first; the client's own parsing then catches host names it
    cannot encode (invalid IDNA labels), which would otherwise fail every attempt.
    Raises InvalidUrl (PrivateTarget for a private target).
    """
    check_endpoint_url(url)
    try:
        # Reading `host` decodes the IDNA labels, as sending does; constructing alone does not.
        host = httpx.URL(url).host
    except (httpx.InvalidURL, ValueError) as error:
        raise InvalidUrl(f"url is not a valid URL: {error}") from error
    check_public_host(host, allowed_hosts)
    return url


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as the HTTP client would connect to it."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def addresses_to_connect(
    host: str,
    port: int,
    allowed_hosts: Collection[str],
    resolve: Callable[[str, int], Awaitable[list[str]]] = resolve_host,
) -> list[str]:
    """Where a webhook to `host` may connect: the host itself when it is on
    `allowed_hosts` (exact, lower case), else every address it resolves to, each once,
    provided all of them are public (a name pointing at 127.0.0.1 or the metadata service
    is refused whole). Raises PrivateTarget, or OSError when the name does not resolve.
    """
    if host.lower().rstrip(".") in allowed_hosts:
        return [host]
    check_public_host(host, allowed_hosts)
    resolved = await resolve(host, port)
    for address in resolved:
        if not is_public_address(ipaddress.ip_address(address)):
            raise PrivateTarget(f"webhook host {host!r} resolves to a non-public address")
    # getaddrinfo repeats an address once per protocol it offers.
    return list(dict.fromkeys(resolved))


async def check_resolved_target(
    url: str,
    allowed_hosts: Collection[str],
    resolve: Callable[[str, int], Awaitable[list[str]]] = resolve_host,
) -> None:
    """Refuse `url` when its host is, or resolves to, a non-public address (see
    `addresses_to_connect`). Raises PrivateTarget, or OSError when the name does not
    resolve.

    The webhook client (services.notifier.egress) runs this before each request only when
    an egress proxy makes the connection; otherwise it connects to the addresses
    `addresses_to_connect` checked, which also stops a name that changes its answer
    between a check and the connection (DNS rebinding).
    """
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    await addresses_to_connect(parsed.host, port, allowed_hosts, resolve)


async def create_endpoint(
    pool: asyncpg.Pool,
    *,
    merchant_id: str,
    url: str,
    events: Sequence[str],
    clock: Clock,
    allowed_hosts: Collection[str] = (),
) -> CreatedWebhookEndpoint:
    """Register a webhook endpoint for `merchant_id` with a fresh signing secret.

    Raises InvalidUrl, InvalidEvents or EndpointLimitReached.
    """
    check_sendable_url(url, allowed_hosts)
    subscribed = check_subscription(events)
    endpoint_id = new_prefixed_id("we")
    secret = new_secret("whsec_", 32)
    async with pool.acquire() as connection, connection.transaction():
        # Serialise creations per merchant so two concurrent requests cannot both pass
        # the count check and exceed the limit.
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"webhook_endpoints:{merchant_id}"
        )
        count = await connection.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL",
            merchant_id,
        )
        if count >= ENDPOINT_COUNT_MAX_PER_MERCHANT:
            raise EndpointLimitReached(
                f"a merchant may have at most {ENDPOINT_COUNT_MAX_PER_MERCHANT} webhook endpoints"
            )
        row = await connection.fetchrow(
            "INSERT INTO webhook_endpoints"
            " (endpoint_id, merchant_id, url, events, secret, enabled, created_at)"
            " VALUES ($1, $2, $3, $4, $5, true, $6) RETURNING *",
            endpoint_id,
            merchant_id,
            url,
            list(subscribed),
            secret,
            clock.now(),
        )
    if row is None:
        raise InvariantViolation("INSERT ... RETURNING returned no row")
    log.info("webhook_endpoint_created", endpoint_id=endpoint_id, merchant_id=merchant_id)
    return CreatedWebhookEndpoint(endpoint=_endpoint(row), secret=secret)


async def ensure_ops_endpoint(
    pool: asyncpg.Pool, *, url: str, secret: str, clock: Clock, allowed_hosts: Collection[str] = ()
) -> None:
    """Make the ops webhook (risk alerts) the configured one: created, or updated in place.

    Raises InvalidUrl."""
    check_sendable_url(url, allowed_hosts)
    await pool.execute(
        "INSERT INTO webhook_endpoints"
        " (endpoint_id, merchant_id, url, events, secret, enabled, created_at)"
        " VALUES ($1, $2, $3, $4, $5, true, $6) ON CONFLICT (endpoint_id) DO UPDATE SET"
        " url = EXCLUDED.url, events = EXCLUDED.events, secret = EXCLUDED.secret, enabled = true",
        OPS_ENDPOINT_ID,
        OPS_MERCHANT_ID,
        url,
        list(OPS_WEBHOOK_EVENTS),
        secret,
        clock.now(),
    )
    log.info("ops_webhook_endpoint_ready", url=url)


class UnknownEndpoint(NotifierError):
    """No endpoint of this merchant has that id (or it was deleted)."""

    code = "webhook_endpoint_not_found"


async def rotate_secret(
    pool: asyncpg.Pool,
    *,
    endpoint_id: str,
    merchant_id: str,
    overlap_seconds: int,
    clock: Clock,
) -> CreatedWebhookEndpoint:
    """Give the endpoint a new signing secret; the old one keeps signing next to it for
    `overlap_seconds` (0 retires it at once). Returns the new secret, shown this once.

    Raises UnknownEndpoint."""
    secret = new_secret("whsec_", 32)
    row = await pool.fetchrow(
        "UPDATE webhook_endpoints SET previous_secret = secret,"
        " previous_secret_expires_at = $3, secret = $4"
        " WHERE endpoint_id = $1 AND merchant_id = $2 AND deleted_at IS NULL RETURNING *",
        endpoint_id,
        merchant_id,
        clock.now() + timedelta(seconds=overlap_seconds),
        secret,
    )
    if row is None:
        raise UnknownEndpoint(f"no webhook endpoint {endpoint_id}")
    log.info("webhook_secret_rotated", endpoint_id=endpoint_id, overlap_seconds=overlap_seconds)
    return CreatedWebhookEndpoint(endpoint=_endpoint(row), secret=secret)


async def update_endpoint(
    pool: asyncpg.Pool,
    *,
    endpoint_id: str,
    merchant_id: str,
    url: str | None,
    events: Sequence[str] | None,
    enabled: bool | None,
    clock: Clock,
    allowed_hosts: Collection[str] = (),
) -> WebhookEndpoint:
    """Change an endpoint's URL, subscription or enabled flag (what is None stays).

    Raises UnknownEndpoint, InvalidUrl, InvalidEvents."""
    if url is not None:
        check_sendable_url(url, allowed_hosts)
    subscribed = list(check_subscription(events)) if events is not None else None
    # Enabling starts afresh (deliveries that waited resume, the failure run is forgotten);
    # disabling records when. Deliveries of a disabled endpoint stay pending.
    row = await pool.fetchrow(
        "UPDATE webhook_endpoints SET url = coalesce($3, url), events = coalesce($4, events),"
        " enabled = coalesce($5, enabled),"
        " failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END,"
        " disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason END,"
        " disabled_at = CASE WHEN $5 THEN NULL WHEN NOT $5 AND enabled THEN $6"
        " ELSE disabled_at END"
        " WHERE endpoint_id = $1 AND merchant_id = $2 AND deleted_at IS NULL RETURNING *",
        endpoint_id,
        merchant_id,
        url,
        subscribed,
        enabled,
        clock.now(),
    )
    if row is None:
        raise UnknownEndpoint(f"no webhook endpoint {endpoint_id}")
    return _endpoint(row)


async def delete_endpoint(
    pool: asyncpg.Pool, *, endpoint_id: str, merchant_id: str, clock: Clock
) -> None:
    """Stop sending to an endpoint and stop listing it; its delivery history is kept and
    its pending deliveries fail.

    Raises UnknownEndpoint."""
    async with pool.acquire() as connection, connection.transaction():
        # The consumer reads endpoints FOR SHARE while it queues deliveries, so this update
        # waits for it, and the next statement sees every delivery it queued.
        deleted = await connection.fetchval(
            "UPDATE webhook_endpoints SET deleted_at = $3, enabled = false"
            " WHERE endpoint_id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
            " RETURNING endpoint_id",
            endpoint_id,
            merchant_id,
            clock.now(),
        )
        if deleted is None:
            raise UnknownEndpoint(f"no webhook endpoint {endpoint_id}")
        await connection.execute(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL"
            " WHERE endpoint_id = $1 AND status = 'pending'",
            endpoint_id,
        )


async def list_endpoints(pool: asyncpg.Pool, merchant_id: str) -> list[WebhookEndpoint]:
    """The merchant's endpoints, oldest first, without their secrets."""
    rows = await pool.fetch(
        "SELECT * FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL"
        " ORDER BY created_at, endpoint_id LIMIT $2",
        merchant_id,
        ENDPOINT_COUNT_MAX_PER_MERCHANT,
    )
    return [_endpoint(row) for row in rows]


# ---------------------------------------------------------------------------------------
# Enqueueing (the consumer)


async def enqueue_deliveries(
    connection: Connection,
    event: Event,
    *,
    clock: Clock,
    first_attempt_delay_ms: int = 0,
) -> None:
    """Keep the event's webhook body (for resends and replays) and record one pending
    delivery of it per enabled endpoint subscribed to it: the merchant's endpoints, and the
    ops endpoint for the event types operations receive.

    Runs inside the consumer's inbox transaction on `connection`; a redelivered event
    never gets here, and the unique first delivery per endpoint and event would stop a
    second one anyway. Raises UnsupportedEvent when `event` has no webhook type (a wiring
    mistake).
    """
    event_type = webhook_event_type(event)
    body = webhook_body(event).decode("utf-8")
    await connection.execute(
        "INSERT INTO webhook_events (event_id, merchant_id, event_type, body, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        event.event_id,
        event.merchant_id,
        event_type,
        body,
        event.occurred_at,
    )
    # FOR SHARE: deleting an endpoint waits until this transaction commits, then fails
    # the deliveries queued here instead of leaving them pending for no one.
    endpoints = await connection.fetch(
        "SELECT endpoint_id, events FROM webhook_endpoints"
        " WHERE (merchant_id = $1 OR endpoint_id = $3) AND enabled"
        " ORDER BY endpoint_id LIMIT $2 FOR SHARE",
        event.merchant_id,
        ENDPOINT_COUNT_MAX_PER_MERCHANT + 1,
        OPS_ENDPOINT_ID,
    )
    subscribed = [
        row["endpoint_id"] for row in endpoints if subscribes_to(row["events"], event_type)
    ]
    due_at = clock.now() + timedelta(milliseconds=first_attempt_delay_ms)
    await queue_deliveries(
        connection, subscribed, [(event.event_id, event_type, body)], "event", due_at, clock
    )
    if subscribed:
        log.info(
            "webhook_deliveries_enqueued", event_type=event_type, endpoint_count=len(subscribed)
        )


async def queue_deliveries(
    connection: Connection,
    endpoint_ids: Sequence[str],
    events: Sequence[tuple[uuid.UUID, str, str]],
    origin: str,
    due_at: datetime,
    clock: Clock,
) -> int:
    """Queue a pending delivery of each (event id, type, body) to each endpoint; the owner
    of each delivery is its endpoint's merchant. Returns how many were queued (a first
    delivery that already exists is not queued again)."""
    if not endpoint_ids or not events:
        return 0
    queued = await connection.fetchval(
        "WITH queued AS ("
        " INSERT INTO webhook_deliveries (delivery_id, endpoint_id, merchant_id, event_id,"
        " event_type, body, status, attempt_count, next_attempt_at, created_at, origin)"
        " SELECT 'wd_' || replace(gen_random_uuid()::text, '-', ''), endpoint.endpoint_id,"
        " endpoint.merchant_id, event.event_id, event.event_type, event.body, 'pending', 0,"
        " $5, $6, $7"
        " FROM webhook_endpoints AS endpoint"
        " CROSS JOIN unnest($2::uuid[], $3::text[], $4::text[])"
        "  WITH ORDINALITY AS event(event_id, event_type, body, position)"
        " WHERE endpoint.endpoint_id = ANY($1::text[])"
        " ORDER BY event.position, endpoint.endpoint_id"
        " ON CONFLICT (endpoint_id, event_id) WHERE origin = 'event' DO NOTHING"
        " RETURNING 1) SELECT count(*) FROM queued",
        list(endpoint_ids),
        [event_id for event_id, _, _ in events],
        [event_type for _, event_type, _ in events],
        [body for _, _, body in events],
        due_at,
        clock.now(),
        origin,
    )
    return int(queued)
