"""One lane per rail: the connector's workers that call a channel (or the bank) for the
operations queued in `channel_operations`, so a slow or dead rail never delays another.

A lane leases due operations of its rail (at most its concurrency at a time), and for
each one:

1. asks whether the answer is recorded already (a redelivered command): nothing to call;
2. asks the circuit breaker, but only for work that never reached the rail: a new payment
   is refused with `channel_unavailable` while its rail is failing, other new work waits
   for the circuit to half-open; a call that may have reached the rail (attempts before
   this one) is never refused;
3. calls the rail outside any transaction, with a deadline;
4. records the answer and closes the operation in one transaction; an unknown outcome
   (timeout, connection loss, 5xx, ambiguous 4xx) leaves it open and due again after a
   growing, jittered pause (`services.common.errors.backoff_s`), under the same idempotency key.

An operation left unknown longer than `unknown_alert_after` is reported once: the event
`ChannelOperationUnresolved` (the ops webhook's `channel_operation.unresolved`), an error
log line and `payrail_channel_operations_unresolved_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import structlog
from prometheus_client import Counter

from services.common.errors import backoff_s, is_transient
from services.common.event_store import ConcurrencyConflict
from services.gateway.channel_results import CHANNEL_UNAVAILABLE
from services.gateway.channels.base import ChannelRejected, ChannelUnavailable
from services.gateway.circuit import ChannelCircuits
from services.gateway.connector import operations
from services.gateway.connector.operations import Answer, Operation, Rails

log = structlog.get_logger(__name__)

RECORD_ATTEMPTS_MAX = 3
IDLE_WAIT_S_MAX = 5.0
# How often at most a lane looks for operations to report as unresolved (not on every
# claim); a quarter of the alert setting when that is shorter.
ALERT_CHECK_INTERVAL_S = 5.0

CHANNEL_CALLS = Counter(
    "payrail_channel_calls_total",
    "Calls the connector made to a rail, by outcome.",
    ["rail", "outcome"],
)
UNRESOLVED = Counter(
    "payrail_channel_operations_unresolved_total",
    "Operations whose outcome stayed unknown past the alert setting.",
    ["rail", "kind"],
)


@dataclass(frozen=True)
class LaneSettings:
    concurrency: int
    call_timeout: timedelta
    retry_initial: timedelta
    retry_max: timedelta
    unknown_alert_after: timedelta


@dataclass
class Lane:
    """The worker of one rail. `run` is the supervised loop; `wake` makes it look for due
    work at once (after the consumer queued some)."""

    rail: str
    pool: asyncpg.Pool
    rails: Rails
    circuits: ChannelCircuits
    settings: LaneSettings
    # Called after a transaction recorded events, so the outbox relay publishes at once.
    on_recorded: Callable[[], None]
    # Called when the rail's circuit may have changed (to publish its health).
    on_circuit_change: Callable[[str], None] = lambda _rail: None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: set[asyncio.Task[None]] = field(default_factory=set)
    _alert_checked_at: float | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                await self._alert_unresolved()
                free = self.settings.concurrency - len(self._running)
                claimed: list[Operation] = []
                if free > 0:
                    now = self.rails.clock.now()
                    lease = now + self.settings.call_timeout * 2 + timedelta(seconds=5)
                    claimed = await operations.claim_due(
                        self.pool, self.rail, now=now, lease_until=lease, limit=free
                    )
                for operation in claimed:
                    task = asyncio.create_task(self._perform(operation))
                    self._running.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    continue  # more may be due: look again as soon as a slot is free
                await self._wait_for_work()
        finally:
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _wait_for_work(self) -> None:
        wait_s = IDLE_WAIT_S_MAX
        if len(self._running) < self.settings.concurrency:
            due = await operations.next_due_at(self.pool, self.rail)
            if due is not None:
                wait_s = min(wait_s, max((due - self.rails.clock.now()).total_seconds(), 0.0))
        if wait_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    async def _perform(self, operation: Operation) -> None:
        try:
            await self._perform_once(operation)
        except Exception as error:
            # The lease runs out and the operation is taken again; nothing is lost.
            level = log.warning if is_transient(error) else log.exception
            level(
                "channel_operation_error",
                rail=self.rail,
                kind=operation.kind.name,
                subject_id=operation.subject_id,
                error=repr(error),
            )

    async def _perform_once(self, operation: Operation) -> None:
        kind, command = operation.kind, operation.command
        async with self.pool.acquire() as connection:
            if await kind.settled(connection, command):
                await operations.finish(connection, operation, self.rails.clock.now())
                return
        if operation.attempts_before == 0 and not self.circuits.allows(self.rail):
            if kind.refused_while_failing:
                refusal = ChannelRejected(CHANNEL_UNAVAILABLE, f"channel {self.rail} is failing")
                await self._record(operation, Answer(refusal))
                CHANNEL_CALLS.labels(self.rail, "refused_by_circuit").inc()
                return
            reopen = self.circuits.open_until(self.rail) or self.rails.clock.now()
            await operations.reschedule(
                self.pool,
                operation,
                at=reopen,
                error=f"circuit of {self.rail} is open",
                unknown=False,
                uncount_attempt=True,
            )
            return
        try:
            async with asyncio.timeout(self.settings.call_timeout.total_seconds()):
                answer = await kind.call(command, self.rails)
        except (ChannelUnavailable, TimeoutError) as error:
            self.circuits.record_failure(self.rail)
            self.on_circuit_change(self.rail)
            CHANNEL_CALLS.labels(self.rail, "unknown").inc()
            delay = timedelta(
                seconds=backoff_s(
                    operation.attempts_before + 1,
                    initial_s=self.settings.retry_initial.total_seconds(),
                    maximum_s=self.settings.retry_max.total_seconds(),
                )
            )
            await operations.reschedule(
                self.pool,
                operation,
                at=self.rails.clock.now() + delay,
                error=f"{type(error).__name__}: {error}",
                unknown=True,
            )
            log.warning(
                "channel_operation_unknown",
                rail=self.rail,
                kind=kind.name,
                subject_id=operation.subject_id,
                attempts=operation.attempts_before + 1,
                retry_in_s=round(delay.total_seconds(), 3),
                error=repr(error),
            )
            return
        self.circuits.record_success(self.rail)
        self.on_circuit_change(self.rail)
        refused = isinstance(answer.result, ChannelRejected)
        CHANNEL_CALLS.labels(self.rail, "refused" if refused else "answered").inc()
        await self._record(operation, answer)

    async def _record(self, operation: Operation, answer: Answer) -> None:
        for attempt in range(1, RECORD_ATTEMPTS_MAX + 1):
            try:
                async with self.pool.acquire() as connection, connection.transaction():
                    await operation.kind.record(connection, operation.command, answer, self.rails)
                    await operations.finish(connection, operation, self.rails.clock.now())
                break
            except ConcurrencyConflict:
                # A callback recorded on the same payment meanwhile: decide again on the
                # new version (the record steps check what is recorded first).
                log.info(
                    "channel_operation_conflict", subject_id=operation.subject_id, attempt=attempt
                )
        else:
            raise ConcurrencyConflict(operation.subject_id, -1)
        self.on_recorded()
        log.info(
            "channel_operation_recorded",
            rail=self.rail,
            kind=operation.kind.name,
            subject_id=operation.subject_id,
            answer=type(answer.result).__name__,
        )

    async def _alert_unresolved(self) -> None:
        checked_at = time.monotonic()
        interval_s = min(
            ALERT_CHECK_INTERVAL_S, self.settings.unknown_alert_after.total_seconds() / 4
        )
        if self._alert_checked_at is not None and checked_at - self._alert_checked_at < interval_s:
            return
        self._alert_checked_at = checked_at
        since = self.rails.clock.now() - self.settings.unknown_alert_after
        async with self.pool.acquire() as connection, connection.transaction():
            alerted = await operations.alert_unresolved(
                connection, self.rail, unknown_since=since, clock=self.rails.clock
            )
        for payload in alerted:
            UNRESOLVED.labels(self.rail, payload.kind).inc()
            log.error(
                "channel_operation_unresolved",
                rail=self.rail,
                kind=payload.kind,
                subject_id=payload.subject_id,
                attempts=payload.attempts,
                first_attempt_at=payload.first_attempt_at.isoformat(),
                last_error=payload.last_error,
            )
        if alerted:
            self.on_recorded()


def circuit_health_writer(
    pool: asyncpg.Pool, circuits: ChannelCircuits, now: Callable[[], datetime]
) -> Callable[[str], None]:
    """A callback that publishes a rail's circuit to `channel_health` when it changed, for
    the gateway's routing of new payments (fire and forget: the table is advisory)."""
    published: dict[str, datetime | None] = {}
    pending: set[asyncio.Task[None]] = set()

    async def write(rail: str, open_until: datetime | None) -> None:
        with contextlib.suppress(Exception):
            await pool.execute(
                "INSERT INTO channel_health (rail, open_until, updated_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (rail) DO UPDATE SET open_until = EXCLUDED.open_until,"
                " updated_at = EXCLUDED.updated_at",
                rail,
                open_until,
                now(),
            )

    def changed(rail: str) -> None:
        open_until = circuits.open_until(rail)
        if rail in published and published[rail] == open_until:
            return
        published[rail] = open_until
        task = asyncio.get_running_loop().create_task(write(rail, open_until))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return changed
