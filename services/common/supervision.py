"""Supervision of a service's background loops (the outbox relay, workers, pollers).

A background loop is an async callable meant to run until the service stops. The
supervisor keeps each one running:
1. `start(name, work)` runs `work` in its own task; the loop is *up* while it runs.
2. When `work` raises anything but `CancelledError` (or returns, which a loop should never
   do), `background_loop_crashed` is logged with the exception, the loop is *down* since
   that moment, and after a backoff it is started again (a *restart*).
3. The backoff is exponential: `backoff_initial_s` after the first crash in a row, doubling
   with each further one, capped at `backoff_s_max`, and shortened by up to
   `backoff_jitter_ratio` at random so that loops which crashed together (the database went
   away) do not all come back at the same moment.
4. A crash after the loop ran for `healthy_after_s` or longer starts a new series: the
   backoff is the initial wait again and the loop is down since this crash. A crash sooner
   than that continues the series: the wait grows and the loop stays down since the first
   crash of the series, so a loop that fails at once on every start is reported down.
5. `down_for_too_long(now)` names the loops down for longer than `down_unready_after_s`;
   `/readyz` answers 503 while there are any.
6. `stop()` cancels every loop and waits for them.

Restarts are counted in `payrail_background_loop_restarts_total{service,loop}`; whether a
loop runs is `payrail_background_loop_up{service,loop}`. There is no limit on the number of
restarts: the capped backoff bounds their rate, and a service that gives up on a loop
would keep answering requests while its work silently stopped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from services.common.invariant import invariant
from services.common.metrics import BACKGROUND_LOOP_RESTARTS, BACKGROUND_LOOP_UP
from services.common.settings import ServiceSettings

log = structlog.get_logger(__name__)

Loop = Callable[[], Coroutine[Any, Any, None]]

# Past this many crashes in a row the doubling has long reached any sensible cap; bounding
# the exponent keeps the arithmetic away from float overflow.
_BACKOFF_EXPONENT_MAX = 32


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with downward jitter."""

    initial_s: float
    s_max: float
    multiplier: float = 2.0
    jitter_ratio: float = 0.2

    def __post_init__(self) -> None:
        invariant(self.initial_s > 0, "backoff must start above zero")
        invariant(self.s_max > 0, "backoff cap must be above zero")
        invariant(self.multiplier >= 1, "backoff must not shrink")
        invariant(0 <= self.jitter_ratio < 1, "jitter ratio must be in [0, 1)")

    def delay_s(self, failure_count: int, jitter_fraction: float) -> float:
        """The wait after the `failure_count`-th failure in a row (1 for the first).

        `jitter_fraction` in [0, 1) (a `random.random()`) shortens the wait by up to
        `jitter_ratio` of it; the wait never exceeds `s_max`.
        """
        invariant(failure_count >= 1, "a backoff follows at least one failure")
        invariant(0 <= jitter_fraction <= 1, "jitter fraction must be in [0, 1]")
        exponent = min(failure_count - 1, _BACKOFF_EXPONENT_MAX)
        base_s = min(self.s_max, self.initial_s * self.multiplier**exponent)
        return base_s * (1 - self.jitter_ratio * jitter_fraction)


@dataclass(frozen=True)
class SupervisionPolicy:
    backoff: Backoff
    healthy_after_s: float
    down_unready_after_s: float

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> SupervisionPolicy:
        return cls(
            backoff=Backoff(
                initial_s=settings.background_loop_backoff_initial_s,
                s_max=settings.background_loop_backoff_s_max,
            ),
            healthy_after_s=settings.background_loop_healthy_after_s,
            down_unready_after_s=settings.background_loop_down_unready_after_s,
        )


@dataclass(frozen=True)
class LoopStatus:
    """One loop as the supervisor sees it. Times are `time.monotonic()` seconds."""

    name: str
    up: bool
    down_since_s: float | None
    """None while up; while down, when the current series of crashes began."""
    restart_count: int
    failure_count: int
    """Crashes in the current series (0 once it has run for `healthy_after_s`)."""
    backoff_s: float | None
    """The wait chosen after the last crash, if any."""


@dataclass
class _SupervisedLoop:
    name: str
    task: asyncio.Task[None] | None = None
    up: bool = False
    series_started_s: float | None = None
    """When the current series of crashes began; None before the first crash."""
    restart_count: int = 0
    failure_count: int = 0
    backoff_s: float | None = None

    def snapshot(self) -> LoopStatus:
        return LoopStatus(
            name=self.name,
            up=self.up,
            down_since_s=None if self.up else self.series_started_s,
            restart_count=self.restart_count,
            failure_count=self.failure_count,
            backoff_s=self.backoff_s,
        )


class LoopSupervisor:
    """Keeps the named background loops of service `service` running (see the module)."""

    def __init__(
        self,
        service: str,
        policy: SupervisionPolicy,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._service = service
        self._policy = policy
        self._monotonic = monotonic
        self._sleep = sleep
        self._jitter = jitter
        self._loops: dict[str, _SupervisedLoop] = {}
        self._stopped = False

    def start(self, name: str, work: Loop) -> None:
        """Run `work` as loop `name` until `stop()`. Raises InvariantViolation when a loop
        of that name exists or the supervisor has stopped (both programmer errors)."""
        invariant(not self._stopped, "the supervisor has stopped")
        invariant(name not in self._loops, f"background loop {name!r} started twice")
        loop = _SupervisedLoop(name)
        self._loops[name] = loop
        loop.task = asyncio.create_task(self._supervise(loop, work), name=f"loop:{name}")

    async def stop(self) -> None:
        """Cancel every loop and wait until all have ended."""
        self._stopped = True
        tasks = [loop.task for loop in self._loops.values() if loop.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for loop in self._loops.values():
            # Stopped on purpose: neither up nor down for too long.
            loop.up = False
            loop.series_started_s = None
            BACKGROUND_LOOP_UP.labels(self._service, loop.name).set(0)

    def status(self, name: str) -> LoopStatus:
        """Raises KeyError when no loop `name` was started."""
        return self._loops[name].snapshot()

    def statuses(self) -> list[LoopStatus]:
        return [loop.snapshot() for loop in self._loops.values()]

    def down_for_too_long(self, now: float) -> list[str]:
        """Names of the loops down, at monotonic time `now`, for longer than the policy's
        `down_unready_after_s`, in the order they were started."""
        return [
            loop.name
            for loop in self._loops.values()
            if not loop.up
            and loop.series_started_s is not None
            and now - loop.series_started_s > self._policy.down_unready_after_s
        ]

    async def _supervise(self, loop: _SupervisedLoop, work: Loop) -> None:
        while True:
            self._mark_up(loop)
            started_s = self._monotonic()
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay_s = self._mark_down(loop, started_s)
                log.error(
                    "background_loop_crashed",
                    loop=loop.name,
                    restart_in_s=round(delay_s, 3),
                    failure_count=loop.failure_count,
                    error=repr(error),
                    exc_info=error,
                )
            else:
                delay_s = self._mark_down(loop, started_s)
                log.error(
                    "background_loop_returned",
                    loop=loop.name,
                    restart_in_s=round(delay_s, 3),
                    failure_count=loop.failure_count,
                )
            await self._sleep(delay_s)
            loop.restart_count += 1
            BACKGROUND_LOOP_RESTARTS.labels(self._service, loop.name).inc()

    def _mark_up(self, loop: _SupervisedLoop) -> None:
        loop.up = True
        BACKGROUND_LOOP_UP.labels(self._service, loop.name).set(1)

    def _mark_down(self, loop: _SupervisedLoop, started_s: float) -> float:
        """Record a crash of `loop` that started at `started_s`; return the backoff."""
        now_s = self._monotonic()
        if now_s - started_s >= self._policy.healthy_after_s:
            # It ran long enough to count as recovered: a new series begins.
            loop.failure_count = 0
            loop.series_started_s = None
        loop.failure_count += 1
        if loop.series_started_s is None:
            loop.series_started_s = now_s
        loop.up = False
        BACKGROUND_LOOP_UP.labels(self._service, loop.name).set(0)
        loop.backoff_s = self._policy.backoff.delay_s(loop.failure_count, self._jitter())
        return loop.backoff_s
