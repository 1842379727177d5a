"""Wake HTTP requests waiting for a payment's projection to change.

One LISTEN connection per gateway process receives the payment id of every committed
projection change and wakes the requests waiting for that payment, so a waiting
request costs no queries until something happened to its payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg

from services.common.db import ChannelListener

CHANNEL = "gateway_payment_updates"

T = TypeVar("T")


class PaymentUpdates:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener = ChannelListener(pool, CHANNEL, self._on_update)

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    def _on_update(self, payment_id: str) -> None:
        for event in self._waiters.get(payment_id, ()):
            event.set()

    @contextlib.contextmanager
    def watch(self, payment_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever `payment_id` changes while the block runs."""
        event = asyncio.Event()
        self._waiters[payment_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[payment_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[payment_id]

    async def wait_for(
        self,
        payment_id: str,
        load: Callable[[], Awaitable[T | None]],
        done: Callable[[T | None], bool],
        wait_ms: int,
    ) -> T | None:
        """What `load` returns once `done` says so, or as it is after `wait_ms`. Loads again
        only when the payment's projection changed."""
        deadline = time.monotonic() + wait_ms / 1000
        with self.watch(payment_id) as changed:
            loaded = await load()
            while not done(loaded):
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=remaining_s)
                changed.clear()
                loaded = await load()
        return loaded
