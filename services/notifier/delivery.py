"""Delivering webhooks: the worker claims due deliveries (pushing `next_attempt_at`
forward as a lease) in a short transaction, sends each outside any transaction, then records
the attempt, the delivery's new state and its endpoint's health in a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import asyncpg
import httpx
import structlog
from prometheus_client import Counter, Gauge, Histogram

from schemas.webhooks import WebhookEndpointDisabled, WebhookEndpointDisabledPayload
from services.common.clock import Clock
from services.common.db import Connection
from services.common.decisions import Decision, Emit
from services.common.errors import TRANSIENT_ERRORS
from services.common.event_store import record_decision, stream_version
from services.common.invariant import InvariantViolation
from services.notifier.domain import (
    ERROR_TEXT_LENGTH_MAX,
    OPS_ENDPOINT_ID,
    RESPONSE_EXCERPT_LENGTH_MAX,
    DeliveryStatus,
    PrivateTarget,
    decide_after_attempt,
    disabled_reason,
    failing_since_after,
    is_success_status,
    should_disable,
    truncate,
)
from services.notifier.settings import NotifierSettings
from services.notifier.signature import signature_header

log = structlog.get_logger(__name__)

PRODUCER = "notifier"
USER_AGENT = "payrail-webhooks/0.1"
# Read at most this much of a receiver's answer: enough for the excerpt, and a hostile
# receiver cannot make the worker buffer an unbounded body.
RESPONSE_READ_BYTES_MAX = 4 * RESPONSE_EXCERPT_LENGTH_MAX
# Time a claimed delivery stays leased beyond its attempt's timeout, so recording the
# attempt (bounded by the database command timeout) finishes well inside the lease.
LEASE_MARGIN_MS = 60_000
# At a graceful stop, attempts in flight get their timeout and this long to be recorded.
STOP_MARGIN_S = 2.0
# After a claim that failed on the database, wait at least this long before the next one
# so an outage is not hammered every poll interval.
WORKER_ERROR_PAUSE_MS = 1_000

WEBHOOK_ATTEMPTS = Counter(
    "payrail_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (succeeded or failed).",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "payrail_webhook_deliveries_total",
    "Webhook deliveries that reached a final state: succeeded, or failed (retry schedule "
    "exhausted).",
    ["outcome"],
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "payrail_webhook_endpoints_disabled_total",
    "Webhook endpoints disabled because every attempt failed for the configured period.",
)
WEBHOOK_QUEUE_DEPTH = Gauge(
    "payrail_webhook_pending_deliveries",
    "Deliveries not yet succeeded or failed, by whether their endpoint is enabled (a "
    "disabled endpoint's deliveries wait for it to be enabled again).",
    ["endpoint_state"],
)
WEBHOOK_OLDEST_PENDING_AGE = Gauge(
    "payrail_webhook_oldest_pending_delivery_age_seconds",
    "Age of the oldest pending delivery to an enabled endpoint; 0 when there is none.",
)
WEBHOOK_ATTEMPT_LATENCY = Histogram(
    "payrail_webhook_attempt_latency_seconds",
    "Duration of one webhook attempt, from sending to reading the answer or giving up.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


# ---------------------------------------------------------------------------------------
# Delivering (the worker)


@dataclass(frozen=True)
class ClaimedDelivery:
    delivery_id: str
    endpoint_id: str
    event_id: uuid.UUID
    attempt_count: int  # Attempts made before the one about to be made.
    body: str
    url: str
    secret: str
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
    """How long a claimed delivery stays invisible to other workers: its attempt starts at
    once and is bounded by the webhook timeout, and recording it by the database command
    timeout, well inside the margin. A worker that dies mid-attempt leaves the delivery to
    be retried when the lease runs out."""
    return settings.webhook_timeout_ms + LEASE_MARGIN_MS


# Claims take a transaction-scoped advisory lock per endpoint, in this class (one per
# schema, so the scratch schemas of tests and benchmarks do not meet), keyed by a hash of
# the endpoint id; a rare collision only makes a claim pass an endpoint over once.
CLAIM_LOCK_CLASS_SQL = "hashtext(current_schema() || '.webhook_claim')"


async def claim_due(
    pool: asyncpg.Pool, now: datetime, settings: NotifierSettings, *, limit: int
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries, oldest due first, at most
    `webhook_endpoint_concurrency_max` in flight per endpoint, counted across every
    notifier process by the leases held in the database.

    Due deliveries are taken endpoint by endpoint (an index probe each), so one endpoint's
    backlog cannot hide another endpoint's due deliveries. Only endpoints that have pending
    deliveries are visited, found by a skip scan of the (endpoint_id, next_attempt_at)
    index: a claim costs a probe per endpoint with work waiting, however many merchants
    have endpoints. A lease also pushes `next_attempt_at` forward, so a delivery whose
    worker died is retried when the lease ends.

    One short transaction of two statements, neither waiting for a lock. The first takes
    each endpoint's claim lock, passing over endpoints another worker is claiming; the
    second, with a snapshot taken after those locks, counts the endpoints' live leases
    and takes their free slots, so two workers never fill the same free slots. Neither
    lock conflicts with the consumer queueing deliveries or an attempt being recorded.
    """
    async with pool.acquire() as connection, connection.transaction():
        endpoint_ids = await connection.fetchval(
            "WITH RECURSIVE pending_endpoint(endpoint_id) AS ("
            "  SELECT min(endpoint_id) FROM webhook_deliveries WHERE status = 'pending'"
            "  UNION ALL"
            "  SELECT (SELECT min(delivery.endpoint_id) FROM webhook_deliveries AS delivery"
            "   WHERE delivery.status = 'pending'"
            "   AND delivery.endpoint_id > pending_endpoint.endpoint_id)"
            "  FROM pending_endpoint WHERE pending_endpoint.endpoint_id IS NOT NULL"
            "), enabled AS MATERIALIZED ("
            "  SELECT endpoint.endpoint_id FROM pending_endpoint JOIN webhook_endpoints"
            "   AS endpoint ON endpoint.endpoint_id = pending_endpoint.endpoint_id"
            "  WHERE endpoint.enabled"
            ") SELECT coalesce(array_agg(endpoint_id), '{}') FROM enabled"
            f" WHERE pg_try_advisory_xact_lock({CLAIM_LOCK_CLASS_SQL}, hashtext(endpoint_id))"
        )
        if not endpoint_ids:
            return []
        rows = await connection.fetch(
            "WITH capacity AS ("
            "  SELECT candidate.endpoint_id, $4::int - ("
            "   SELECT count(*)::int FROM webhook_deliveries AS leased"
            "   WHERE leased.endpoint_id = candidate.endpoint_id AND leased.status = 'pending'"
            "   AND leased.leased_until > $1) AS free"
            "  FROM unnest($5::text[]) AS candidate(endpoint_id)"
            "  JOIN webhook_endpoints AS endpoint ON endpoint.endpoint_id = candidate.endpoint_id"
            "  WHERE endpoint.enabled"  # it may have been disabled since the first statement
            "), due AS ("
            "  SELECT picked.delivery_id FROM capacity CROSS JOIN LATERAL ("
            "   SELECT delivery_id, next_attempt_at FROM webhook_deliveries"
            "   WHERE endpoint_id = capacity.endpoint_id AND status = 'pending'"
            "   AND next_attempt_at <= $1 ORDER BY endpoint_id, next_attempt_at"
            "   LIMIT greatest(capacity.free, 0) FOR UPDATE SKIP LOCKED"
            "  ) AS picked ORDER BY picked.next_attempt_at LIMIT $2"
            ") UPDATE webhook_deliveries AS delivery"
            " SET next_attempt_at = $3, leased_until = $3"
            " FROM due, webhook_endpoints AS endpoint"
            " WHERE delivery.delivery_id = due.delivery_id"
            " AND endpoint.endpoint_id = delivery.endpoint_id"
            " RETURNING delivery.delivery_id, delivery.endpoint_id, delivery.event_id,"
            " delivery.attempt_count, delivery.body, endpoint.url, endpoint.secret,"
            " CASE WHEN endpoint.previous_secret_expires_at > $1"
            " THEN endpoint.previous_secret END AS previous_secret",
            now,
            limit,
            now + timedelta(milliseconds=lease_ms(settings)),
            settings.webhook_endpoint_concurrency_max,
            endpoint_ids,
        )
    return [
        ClaimedDelivery(
            delivery_id=row["delivery_id"],
            endpoint_id=row["endpoint_id"],
            event_id=row["event_id"],
            attempt_count=row["attempt_count"],
            body=row["body"],
            url=row["url"],
            secret=row["secret"],
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
) -> AttemptResult:
    """POST the delivery's stored body once, signed now. Never raises for network errors.

    `http_client` is the notifier's webhook client (services.notifier.egress): an attempt
    to a host that is, or resolves to, a non-public address fails without sending.
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
        # The endpoint is locked first, as deleting it does, so the two cannot deadlock
        # over the endpoint and its deliveries.
        endpoint = await connection.fetchrow(
            "SELECT merchant_id, url, enabled, failing_since FROM webhook_endpoints"
            " WHERE endpoint_id = $1 FOR UPDATE",
            delivery.endpoint_id,
        )
        if endpoint is None:
            raise InvariantViolation(f"delivery {delivery.delivery_id} has no endpoint")
        # The attempt_count guard detects a lease that ran out while this worker was
        # sending: another worker then owns the delivery and this result is dropped.
        updated = await connection.fetchval(
            "UPDATE webhook_deliveries SET status = $2, attempt_count = $3,"
            " next_attempt_at = $4, delivered_at = $5, leased_until = NULL"
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
        await _track_endpoint_health(connection, endpoint, delivery, result, settings, clock)
    WEBHOOK_ATTEMPTS.labels(outcome="succeeded" if result.succeeded else "failed").inc()
    if outcome.status is not DeliveryStatus.PENDING:
        WEBHOOK_DELIVERIES.labels(outcome=outcome.status.value).inc()
    log.info(
        "webhook_attempt_recorded",
        delivery_id=delivery.delivery_id,
        attempt_number=attempt_number,
        status_code=result.status_code,
        error=result.error,
        delivery_status=outcome.status.value,
    )


async def _track_endpoint_health(
    connection: Connection,
    endpoint: asyncpg.Record,
    delivery: ClaimedDelivery,
    result: AttemptResult,
    settings: NotifierSettings,
    clock: Clock,
) -> None:
    """Carry the endpoint's run of failures on by one attempt, and disable the endpoint
    when the run has lasted `webhook_disable_after_ms`: it then records
    `WebhookEndpointDisabled` (the merchant's event, and an alert on the ops webhook).
    The ops endpoint itself is never disabled; its failures are logged as errors.
    `endpoint` is the endpoint's row, locked by the caller's transaction."""
    failing_since = failing_since_after(
        endpoint["failing_since"], result.attempted_at, result.succeeded
    )
    if failing_since != endpoint["failing_since"]:
        await connection.execute(
            "UPDATE webhook_endpoints SET failing_since = $2 WHERE endpoint_id = $1",
            delivery.endpoint_id,
            failing_since,
        )
    now = clock.now()
    if not endpoint["enabled"] or not should_disable(
        failing_since, now, settings.webhook_disable_after_ms
    ):
        return
    if failing_since is None:
        raise InvariantViolation("should_disable holds only for a failing endpoint")
    if delivery.endpoint_id == OPS_ENDPOINT_ID:
        log.error("ops_webhook_failing", failing_since=failing_since.isoformat())
        return
    reason = disabled_reason(failing_since, now)
    await connection.execute(
        "UPDATE webhook_endpoints SET enabled = false, disabled_at = $2, disabled_reason = $3"
        " WHERE endpoint_id = $1",
        delivery.endpoint_id,
        now,
        reason,
    )
    stream = f"webhook_endpoint:{delivery.endpoint_id}"
    await record_decision(
        connection,
        Decision(
            events=(
                Emit(
                    WebhookEndpointDisabled,
                    WebhookEndpointDisabledPayload(
                        endpoint_id=delivery.endpoint_id,
                        url=endpoint["url"],
                        failing_since=failing_since,
                        disabled_at=now,
                        reason=reason,
                    ),
                ),
            )
        ),
        stream_id=stream,
        expected_version=await stream_version(connection, stream),
        merchant_id=endpoint["merchant_id"],
        producer=PRODUCER,
        clock=clock,
        cause=None,
        correlation_id=stream,
    )
    WEBHOOK_ENDPOINTS_DISABLED.inc()
    log.warning("webhook_endpoint_disabled", endpoint_id=delivery.endpoint_id, reason=reason)


async def _attempt(
    pool: asyncpg.Pool,
    http_client: httpx.AsyncClient,
    delivery: ClaimedDelivery,
    settings: NotifierSettings,
    clock: Clock,
) -> None:
    result = await send_webhook(
        http_client,
        delivery,
        timeout_ms=settings.webhook_timeout_ms,
        clock=clock,
    )
    await _record_attempt(pool, delivery, result, settings, clock)


class DeliveryDispatcher:
    """Keeps up to `webhook_concurrency_max` attempts in flight, at most
    `webhook_endpoint_concurrency_max` per endpoint (counted across processes, see
    `claim_due`), and claims more as soon as a slot frees: a slow endpoint occupies its own
    slots only, never the others' turn.

    A database error while recording one attempt is logged, and that delivery is retried
    when its lease runs out; any other error in an attempt is a bug and is raised by `run`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        http_client: httpx.AsyncClient,
        settings: NotifierSettings,
        clock: Clock,
        *,
        schema: str = "notifier",
    ) -> None:
        self._pool = pool
        self._http_client = http_client
        self._settings = settings
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._woken = asyncio.Event()
        self._bugs: list[BaseException] = []

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def fill(self) -> int:
        """Claim due deliveries into the free slots and start their attempts; returns how
        many were claimed. Raises what claiming raises (database errors)."""
        free = self._settings.webhook_concurrency_max - len(self._tasks)
        if free <= 0:
            return 0
        claimed = await claim_due(self._pool, self._clock.now(), self._settings, limit=free)
        for delivery in claimed:
            task = asyncio.create_task(
                _attempt(self._pool, self._http_client, delivery, self._settings, self._clock)
            )
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, delivery))
        return len(claimed)

    def _finished(self, delivery: ClaimedDelivery, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if isinstance(error, TRANSIENT_ERRORS):
            log.warning(
                "webhook_record_failed", delivery_id=delivery.delivery_id, error=repr(error)
            )
        else:
            self._bugs.append(error)

    def raise_bug(self) -> None:
        """Raise the first unexpected error an attempt raised, if any."""
        if self._bugs:
            raise self._bugs[0]

    async def drain(self) -> None:
        """Wait until every attempt in flight has been recorded."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        self.raise_bug()

    def wake(self) -> None:
        """Claim at once: deliveries were queued by this process (its consumer after a
        batch, a resend or a replay) and committed. Other processes' queued deliveries are
        found by the poll."""
        self._woken.set()

    async def wait_for_work(self, timeout_s: float) -> None:
        """Return when deliveries were queued, a slot freed, or `timeout_s` passed."""
        waiters = {
            asyncio.create_task(self._woken.wait()),
            asyncio.create_task(self._slot_freed.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        self._slot_freed.clear()
        self._woken.clear()

    async def run(self) -> None:
        """Deliver for the life of the process. Cancelled at shutdown, it claims no more
        and gives the attempts in flight their timeout to finish and be recorded, so a
        graceful stop neither repeats them nor leaves their leases holding the endpoints'
        slots; what is still running then is abandoned to its lease."""
        settings = self._settings
        try:
            while True:
                self.raise_bug()
                try:
                    claimed = await self.fill()
                except TRANSIENT_ERRORS as error:
                    log.warning("webhook_claim_failed", error=repr(error))
                    await asyncio.sleep(
                        max(settings.delivery_poll_interval_ms, WORKER_ERROR_PAUSE_MS) / 1000
                    )
                    continue
                # Slots left and deliveries claimed: more may be due, claim again.
                if claimed and len(self._tasks) < settings.webhook_concurrency_max:
                    continue
                await self.wait_for_work(settings.delivery_poll_interval_ms / 1000)
        finally:
            if self._tasks:
                await asyncio.wait(
                    set(self._tasks), timeout=settings.webhook_timeout_ms / 1000 + STOP_MARGIN_S
                )
            for task in set(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def deliver_due(
    pool: asyncpg.Pool, http_client: httpx.AsyncClient, settings: NotifierSettings, clock: Clock
) -> int:
    """Claim the deliveries due now (within the concurrency limits), attempt each once and
    wait until every attempt is recorded. Returns how many were claimed.

    One round of what `DeliveryDispatcher.run` does continuously; raises an attempt's
    unexpected error once every attempt of the round has finished.
    """
    dispatcher = DeliveryDispatcher(pool, http_client, settings, clock)
    claimed = await dispatcher.fill()
    await dispatcher.drain()
    return claimed


async def refresh_queue_gauges(pool: asyncpg.Pool, clock: Clock) -> None:
    """Read the delivery queue's depth and its oldest pending age into the gauges."""
    row = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE endpoint.enabled) AS enabled,"
        " count(*) FILTER (WHERE NOT endpoint.enabled) AS disabled,"
        " min(delivery.created_at) FILTER (WHERE endpoint.enabled) AS oldest"
        " FROM webhook_deliveries AS delivery JOIN webhook_endpoints AS endpoint"
        " USING (endpoint_id) WHERE delivery.status = 'pending'"
    )
    if row is None:
        raise InvariantViolation("an aggregate query returned no row")
    WEBHOOK_QUEUE_DEPTH.labels(endpoint_state="enabled").set(row["enabled"])
    WEBHOOK_QUEUE_DEPTH.labels(endpoint_state="disabled").set(row["disabled"])
    oldest: datetime | None = row["oldest"]
    age_s = (clock.now() - oldest).total_seconds() if oldest is not None else 0.0
    WEBHOOK_OLDEST_PENDING_AGE.set(max(0.0, age_s))
