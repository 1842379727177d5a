"""The notifier's use cases: register endpoints, enqueue deliveries, deliver due ones.

Enqueuing happens in the consumer, inside the inbox transaction; sending never does. The
delivery worker claims due deliveries in a short transaction (pushing `next_attempt_at`
forward as a lease), sends them outside any transaction, then records each attempt and
the delivery's new state in a second short transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import asyncpg
import httpx
import structlog
from prometheus_client import Counter, Histogram

from schemas.envelope import Event
from schemas.public_events import OPS_EVENT_TYPES
from services.common.clock import Clock
from services.common.consumer import TRANSIENT_ERRORS
from services.common.db import Connection
from services.common.ids import new_prefixed_id, new_secret
from services.common.invariant import InvariantViolation
from services.notifier.domain import (
    ENDPOINT_COUNT_MAX_PER_MERCHANT,
    ERROR_TEXT_LENGTH_MAX,
    OPS_ENDPOINT_ID,
    OPS_MERCHANT_ID,
    RESPONSE_EXCERPT_LENGTH_MAX,
    DeliveryStatus,
    InvalidUrl,
    NotifierError,
    PrivateTarget,
    check_endpoint_url,
    check_public_host,
    check_subscription,
    decide_after_attempt,
    is_public_address,
    is_success_status,
    subscribes_to,
    truncate,
    webhook_body,
    webhook_event_type,
)
from services.notifier.settings import NotifierSettings
from services.notifier.signature import signature_header

log = structlog.get_logger(__name__)


USER_AGENT = "payrail-webhooks/0.1"
# Read at most this much of a receiver's answer: enough for the excerpt, and a hostile
# receiver cannot make the worker buffer an unbounded body.
RESPONSE_READ_BYTES_MAX = 4 * RESPONSE_EXCERPT_LENGTH_MAX
# Time a claimed delivery stays leased beyond its worst-case send time, so recording the
# attempt (bounded by the database command timeout) finishes well inside the lease.
LEASE_MARGIN_MS = 60_000
DELIVERY_LIST_LIMIT_MAX = 100

WEBHOOK_ATTEMPTS = Counter(
    "payrail_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (succeeded or failed).",
    ["outcome"],
)
WEBHOOK_DELIVERIES_FAILED = Counter(
    "payrail_webhook_deliveries_failed_total",
    "Webhook deliveries that exhausted their retry schedule.",
)
WEBHOOK_ATTEMPT_LATENCY = Histogram(
    "payrail_webhook_attempt_latency_seconds",
    "Duration of one webhook attempt, from sending to reading the answer or giving up.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


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


async def check_resolved_target(
    url: str,
    allowed_hosts: Collection[str],
    resolve: Callable[[str, int], Awaitable[list[str]]] = resolve_host,
) -> None:
    """Resolve the URL's host and refuse it when any address it resolves to is not public
    (a name pointing at 127.0.0.1 or the metadata service). Raises PrivateTarget, or
    OSError when the name does not resolve.

    The client resolves the name again to connect, so a name that changes its answer
    between the two (DNS rebinding with a zero TTL) is not fully stopped here; an egress
    proxy that enforces the same rule (HTTPS_PROXY is honoured) closes that gap.
    """
    parsed = httpx.URL(url)
    host = parsed.host
    if host.lower().rstrip(".") in allowed_hosts:
        return
    check_public_host(host, allowed_hosts)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    for resolved in await resolve(host, port):
        address = ipaddress.ip_address(resolved)
        if not is_public_address(address):
            raise PrivateTarget(f"webhook host {host!r} resolves to a non-public address")


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
        list(OPS_EVENT_TYPES.values()),
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
    allowed_hosts: Collection[str] = (),
) -> WebhookEndpoint:
    """Change an endpoint's URL, subscription or enabled flag (what is None stays).

    Raises UnknownEndpoint, InvalidUrl, InvalidEvents."""
    if url is not None:
        check_sendable_url(url, allowed_hosts)
    subscribed = list(check_subscription(events)) if events is not None else None
    row = await pool.fetchrow(
        "UPDATE webhook_endpoints SET url = coalesce($3, url), events = coalesce($4, events),"
        " enabled = coalesce($5, enabled)"
        " WHERE endpoint_id = $1 AND merchant_id = $2 AND deleted_at IS NULL RETURNING *",
        endpoint_id,
        merchant_id,
        url,
        subscribed,
        enabled,
    )
    if row is None:
        raise UnknownEndpoint(f"no webhook endpoint {endpoint_id}")
    return _endpoint(row)


async def delete_endpoint(
    pool: asyncpg.Pool, *, endpoint_id: str, merchant_id: str, clock: Clock
) -> None:
    """Stop sending to an endpoint and stop listing it; its delivery history is kept.

    Raises UnknownEndpoint."""
    deleted = await pool.fetchval(
        "UPDATE webhook_endpoints SET deleted_at = $3, enabled = false"
        " WHERE endpoint_id = $1 AND merchant_id = $2 AND deleted_at IS NULL"
        " RETURNING endpoint_id",
        endpoint_id,
        merchant_id,
        clock.now(),
    )
    if deleted is None:
        raise UnknownEndpoint(f"no webhook endpoint {endpoint_id}")


async def list_endpoints(pool: asyncpg.Pool, merchant_id: str) -> list[WebhookEndpoint]:
    """The merchant's endpoints, oldest first, without their secrets."""
    rows = await pool.fetch(
        "SELECT endpoint_id, merchant_id, url, events, enabled, created_at"
        " FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL"
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
    """Record one pending delivery of `event` per enabled endpoint subscribed to it.

    Runs inside the consumer's inbox transaction on `connection`; a redelivered event
    never gets here, and UNIQUE(endpoint_id, event_id) would stop a second delivery anyway.
    Raises UnsupportedEvent when `event` has no webhook type (a wiring mistake).
    """
    event_type = webhook_event_type(event)
    endpoints = await connection.fetch(
        "SELECT endpoint_id, events FROM webhook_endpoints"
        " WHERE merchant_id = $1 AND enabled ORDER BY endpoint_id LIMIT $2",
        event.merchant_id,
        ENDPOINT_COUNT_MAX_PER_MERCHANT,
    )
    subscribed = [
        row["endpoint_id"] for row in endpoints if subscribes_to(row["events"], event_type)
    ]
    if not subscribed:
        return
    body = webhook_body(event).decode("utf-8")
    now = clock.now()
    due_at = now + timedelta(milliseconds=first_attempt_delay_ms)
    await connection.executemany(
        "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, merchant_id, event_id,"
        " event_type, body, status, attempt_count, next_attempt_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8)"
        " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        [
            (
                new_prefixed_id("wd"),
                endpoint_id,
                event.merchant_id,
                event.event_id,
                event_type,
                body,
                due_at,
                now,
            )
            for endpoint_id in subscribed
        ],
    )
    log.info("webhook_deliveries_enqueued", event_type=event_type, endpoint_count=len(subscribed))


# ---------------------------------------------------------------------------------------
# Delivering (the worker)


@dataclass(frozen=True)
class ClaimedDelivery:
    delivery_id: str
    event_id: uuid.UUID
    attempt_count: int  # Attempts made before the one about to be made.
    body: str
    url: str
    secret: str
    endpoint_enabled: bool
    previous_secret: str | None = None  # still signing during a rotation's overlap


@dataclass(frozen=True)
class AttemptResult:
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None

    @property
    def succeeded(self) -> bool:
        return (
            self.error is None
            and self.status_code is not None
            and is_success_status(self.status_code)
        )


def lease_ms(settings: NotifierSettings) -> int:
    """How long a claimed delivery stays invisible to other workers.

    Longer than the worst case of one round: a claimed delivery may wait for
    `ceil(batch / concurrency)` send slots, each bounded by the webhook timeout. A worker
    that dies mid-round leaves its deliveries to be retried when the lease runs out.
    """
    rounds = math.ceil(settings.delivery_batch_size_max / settings.webhook_concurrency_max)
    return rounds * settings.webhook_timeout_ms + LEASE_MARGIN_MS


async def _claim_due(
    pool: asyncpg.Pool, now: datetime, settings: NotifierSettings
) -> list[ClaimedDelivery]:
    # One statement is one short transaction: the rows are locked only while their
    # lease is written, and SKIP LOCKED lets several workers claim disjoint batches.
    rows = await pool.fetch(
        "WITH due AS ("
        "  SELECT delivery_id FROM webhook_deliveries"
        "  WHERE status = 'pending' AND next_attempt_at <= $1"
        "  ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ") UPDATE webhook_deliveries AS delivery SET next_attempt_at = $3"
        " FROM due, webhook_endpoints AS endpoint"
        " WHERE delivery.delivery_id = due.delivery_id"
        " AND endpoint.endpoint_id = delivery.endpoint_id"
        " RETURNING delivery.delivery_id, delivery.event_id, delivery.attempt_count,"
        " delivery.body, endpoint.url, endpoint.secret, endpoint.enabled,"
        " CASE WHEN endpoint.previous_secret_expires_at > $1 THEN endpoint.previous_secret"
        " END AS previous_secret",
        now,
        settings.delivery_batch_size_max,
        now + timedelta(milliseconds=lease_ms(settings)),
    )
    return [
        ClaimedDelivery(
            delivery_id=row["delivery_id"],
            event_id=row["event_id"],
            attempt_count=row["attempt_count"],
            body=row["body"],
            url=row["url"],
            secret=row["secret"],
            endpoint_enabled=row["enabled"],
            previous_secret=row["previous_secret"],
        )
        for row in rows
    ]


async def _read_excerpt(response: httpx.Response) -> str:
    # Raw bytes, not decoded ones: with `Accept-Encoding: identity` asked for, reading raw
    # keeps a compressed answer from expanding beyond the limit in memory.
    received = bytearray()
    chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            received += chunk
            if len(received) >= RESPONSE_READ_BYTES_MAX:
                break
    text = bytes(received[:RESPONSE_READ_BYTES_MAX]).decode("utf-8", errors="replace")
    return truncate(text, RESPONSE_EXCERPT_LENGTH_MAX)


async def send_webhook(
    http_client: httpx.AsyncClient,
    delivery: ClaimedDelivery,
    *,
    timeout_ms: int,
    clock: Clock,
    allowed_hosts: Collection[str] = (),
) -> AttemptResult:
    """POST the delivery's stored body once, signed now. Never raises for network errors.

    The target is resolved and checked first: an attempt to a host that resolves to a
    non-public address (and is not on `allowed_hosts`) fails without sending anything.
    """
    attempted_at = clock.now()
    body = delivery.body.encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "Payrail-Event-Id": str(delivery.event_id),
        "Payrail-Signature": signature_header(
            delivery.secret,
            int(attempted_at.timestamp()),
            body,
            *([delivery.previous_secret] if delivery.previous_secret else []),
        ),
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
    }
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None
    started = time.monotonic()
    try:
        # One deadline for the whole attempt: httpx's own timeouts apply per operation.
        async with asyncio.timeout(timeout_ms / 1000):
            await check_resolved_target(delivery.url, allowed_hosts)
            async with http_client.stream(
                "POST", delivery.url, content=body, headers=headers
            ) as response:
                status_code = response.status_code
                excerpt = await _read_excerpt(response)
    except TimeoutError:
        error = f"timed out after {timeout_ms} ms"
    except PrivateTarget as refused:
        error = f"not sent: {refused.message}"
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as send_error:
        # ValueError covers a host name the client cannot encode (idna raises it): the
        # receiver's URL is merchant input, so a bad one fails attempts, never the worker.
        error = f"{type(send_error).__name__}: {send_error}"
    latency_ms = max(0, round((time.monotonic() - started) * 1000))
    WEBHOOK_ATTEMPT_LATENCY.observe(latency_ms / 1000)
    return AttemptResult(
        attempted_at=attempted_at,
        status_code=status_code,
        latency_ms=latency_ms,
        error=truncate(error, ERROR_TEXT_LENGTH_MAX) if error is not None else None,
        response_excerpt=excerpt,
    )


async def _record_attempt(
    pool: asyncpg.Pool,
    delivery: ClaimedDelivery,
    result: AttemptResult,
    settings: NotifierSettings,
    clock: Clock,
) -> None:
    attempt_number = delivery.attempt_count + 1
    outcome = decide_after_attempt(
        attempt_number, result.succeeded, settings.webhook_retry_schedule_ms
    )
    now = clock.now()
    next_attempt_at = (
        now + timedelta(milliseconds=outcome.next_attempt_delay_ms)
        if outcome.next_attempt_delay_ms is not None
        else None
    )
    async with pool.acquire() as connection, connection.transaction():
        # The attempt_count guard detects a lease that ran out while this worker was
        # sending: another worker then owns the delivery and this result is dropped.
        updated = await connection.fetchval(
            "UPDATE webhook_deliveries SET status = $2, attempt_count = $3,"
            " next_attempt_at = $4, delivered_at = $5"
            " WHERE delivery_id = $1 AND status = 'pending' AND attempt_count = $6"
            " RETURNING true",
            delivery.delivery_id,
            outcome.status.value,
            attempt_number,
            next_attempt_at,
            now if outcome.status is DeliveryStatus.SUCCEEDED else None,
            delivery.attempt_count,
        )
        if not updated:
            log.warning("webhook_lease_lost", delivery_id=delivery.delivery_id)
            return
        await connection.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt_number, attempted_at,"
            " succeeded, status_code, latency_ms, error, response_excerpt)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            delivery.delivery_id,
            attempt_number,
            result.attempted_at,
            result.succeeded,
            result.status_code,
            result.latency_ms,
            result.error,
            result.response_excerpt,
        )
    WEBHOOK_ATTEMPTS.labels(outcome="succeeded" if result.succeeded else "failed").inc()
    if outcome.status is DeliveryStatus.FAILED:
        WEBHOOK_DELIVERIES_FAILED.inc()
    log.info(
        "webhook_attempt_recorded",
        delivery_id=delivery.delivery_id,
        attempt_number=attempt_number,
        status_code=result.status_code,
        error=result.error,
        delivery_status=outcome.status.value,
    )


async def _abandon_disabled(pool: asyncpg.Pool, delivery: ClaimedDelivery) -> None:
    # An endpoint disabled after the event arrived gets nothing more; no attempt is made.
    await pool.execute(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL"
        " WHERE delivery_id = $1 AND status = 'pending' AND attempt_count = $2",
        delivery.delivery_id,
        delivery.attempt_count,
    )
    log.info("webhook_delivery_abandoned", delivery_id=delivery.delivery_id)


async def deliver_due(
    pool: asyncpg.Pool, http_client: httpx.AsyncClient, settings: NotifierSettings, clock: Clock
) -> int:
    """Run one worker round: claim up to a batch of due deliveries and attempt each once.

    Returns how many deliveries were claimed. A database error while recording one
    delivery is logged and that delivery is retried when its lease runs out; any other
    error is a bug and is raised once every delivery of the round has finished.
    """
    claimed = await _claim_due(pool, clock.now(), settings)
    if not claimed:
        return 0
    semaphore = asyncio.Semaphore(settings.webhook_concurrency_max)

    async def process(delivery: ClaimedDelivery) -> None:
        if not delivery.endpoint_enabled:
            await _abandon_disabled(pool, delivery)
            return
        async with semaphore:
            result = await send_webhook(
                http_client,
                delivery,
                timeout_ms=settings.webhook_timeout_ms,
                clock=clock,
                allowed_hosts=frozenset(settings.webhook_allowed_hosts),
            )
        await _record_attempt(pool, delivery, result, settings, clock)

    outcomes = await asyncio.gather(
        *(process(delivery) for delivery in claimed), return_exceptions=True
    )
    bugs: list[Exception] = []
    for delivery, outcome in zip(claimed, outcomes, strict=True):
        if isinstance(outcome, TRANSIENT_ERRORS):
            log.warning(
                "webhook_record_failed", delivery_id=delivery.delivery_id, error=repr(outcome)
            )
        elif isinstance(outcome, Exception):
            bugs.append(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome  # Cancellation and the like must propagate untouched.
    if bugs:
        raise bugs[0]
    return len(claimed)


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
    attempts: tuple[Attempt, ...]


async def list_deliveries(
    pool: asyncpg.Pool,
    *,
    merchant_id: str,
    event_id: uuid.UUID | None = None,
    limit: int = DELIVERY_LIST_LIMIT_MAX,
) -> list[Delivery]:
    """The merchant's most recent deliveries (of one event, if given), each with its attempts."""
    limit = max(1, min(limit, DELIVERY_LIST_LIMIT_MAX))
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT delivery_id, endpoint_id, merchant_id, event_id, event_type, status,"
            " attempt_count, next_attempt_at, created_at, delivered_at"
            " FROM webhook_deliveries"
            " WHERE merchant_id = $1 AND ($2::uuid IS NULL OR event_id = $2)"
            " ORDER BY created_at DESC, delivery_id LIMIT $3",
            merchant_id,
            event_id,
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
            attempts=tuple(attempts.get(row["delivery_id"], ())),
        )
        for row in rows
    ]
