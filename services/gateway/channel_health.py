"""The gateway's view of each channel's circuit, as the connector publishes it in
`channel_health`, for routing new payments away from a failing channel."""

from __future__ import annotations

import time

import asyncpg

from services.common.clock import Clock


class ChannelHealth:
    """Which rails are failing now, read at most once per `cache_ms`."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, *, cache_ms: int) -> None:
        self._pool = pool
        self._clock = clock
        self._cache_s = cache_ms / 1000
        self._failing: frozenset[str] = frozenset()
        self._read_at: float | None = None

    async def failing(self) -> frozenset[str]:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self._cache_s:
            rows = await self._pool.fetch(
                "SELECT rail FROM channel_health WHERE open_until > $1", self._clock.now()
            )
            self._failing = frozenset(row["rail"] for row in rows)
            self._read_at = now
        return self._failing
