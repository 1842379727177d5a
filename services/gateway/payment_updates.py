"""Wake HTTP requests waiting for a payment's projection to change.

One LISTEN connection per gateway process receives the payment id of every committed
projection change and wakes the requests waiting for that payment, so a waiting
request costs no queries until something happened to its payment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

import asyncpg

from services.common.db import ChannelListener

CHANNEL = "gateway_payment_updates"


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
