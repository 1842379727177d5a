"""A circuit breaker per rail (each payment channel, and the bank rail): stop sending new
work to a rail that keeps failing, and try it again after a pause.

Closed: calls go through; `failure_threshold` consecutive failures (the outcome unknown:
timeouts, connection errors, 5xx) open the circuit. Open: calls are refused at once for
`open_ms`. Half-open: after the pause, calls go through again; the first success closes
the circuit, the first failure opens it for another pause.

A channel's refusal (a decline, a conflict) is an answer, not a failure: the channel is
up. The breaker refuses only work that has not reached the rail yet; the connector never
asks it about a call that may have reached the rail (services/gateway/connector/lanes.py).
It is in-memory per connector process, like most breakers: every process learns a rail's
health from its own calls, and publishes it to the `channel_health` table, which the
gateway reads to route new payments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from schemas.common import Channel
from services.common.clock import Clock
from services.common.invariant import invariant


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Health:
    consecutive_failures: int = 0
    opened_at: datetime | None = None


class ChannelCircuits:
    def __init__(self, clock: Clock, *, failure_threshold: int, open_ms: int) -> None:
        invariant(failure_threshold >= 1, "failure_threshold must be at least 1")
        invariant(open_ms >= 0, "open_ms must not be negative")
        self._clock = clock
        self._failure_threshold = failure_threshold
        self._open_for = timedelta(milliseconds=open_ms)
        self._health: dict[str, _Health] = {}

    def state(self, channel: str) -> CircuitState:
        health = self._health.get(channel)
        if health is None or health.opened_at is None:
            return CircuitState.CLOSED
        if self._clock.now() - health.opened_at < self._open_for:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allows(self, channel: str) -> bool:
        """Whether a call to `channel` may be tried now (closed or half-open)."""
        return self.state(channel) is not CircuitState.OPEN

    def record_success(self, channel: str) -> None:
        self._health.pop(channel, None)

    def record_failure(self, channel: str) -> None:
        health = self._health.setdefault(channel, _Health())
        health.consecutive_failures += 1
        half_open = health.opened_at is not None
        if half_open or health.consecutive_failures >= self._failure_threshold:
            health.opened_at = self._clock.now()

    def open_until(self, channel: str) -> datetime | None:
        """When the open circuit of `channel` half-opens; None when it is not open."""
        health = self._health.get(channel)
        if (
            health is None
            or health.opened_at is None
            or self.state(channel) is not CircuitState.OPEN
        ):
            return None
        return health.opened_at + self._open_for

    def snapshot(self) -> dict[str, str]:
        return {channel.value: self.state(channel).value for channel in Channel}
