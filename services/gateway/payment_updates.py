"""Wake HTTP requests waiting for a payment's projection to change.

The gateway's own consumer projects payment events; after each batch commits it hands
the payment ids to `changed`, which wakes the requests of this process waiting for those
payments and sends ONE NOTIFY for the whole batch so that other gateway instances wake
theirs. A waiting request costs no queries until something happened to its payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import asyncpg
import structlog

from schemas import Message, Topic
from services.common.db import ChannelListener

log = structlog.get_logger(__name__)

CHANNEL = "gateway_payment_updates"
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
_PAYLOAD_BYTES_MAX = 7_000

T = TypeVar("T")


class PaymentUpdates:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener = ChannelListener(pool, CHANNEL, self._on_notify)
        # Tells this process's own NOTIFYs apart from other instances'.
        self._instance = uuid.uuid4().hex[:12]
        self._notifies: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await asyncio.gather(*self._notifies, return_exceptions=True)
        await self._listener.stop()

    def after_batch(self, applied: Sequence[Message]) -> None:
        """The consumer's hook: wake waiters of every payment the batch's payment events
        changed (a payment event's aggregate is its payment)."""
        payment_ids = {m.aggregate_id for m in applied if m.topic is Topic.PAYMENTS_EVENTS}
        if payment_ids:
            self.changed(payment_ids)

    def changed(self, payment_ids: Iterable[str]) -> None:
        """Wake this process's waiters at once, and other instances' with one NOTIFY."""
        ids = sorted(set(payment_ids))
        for payment_id in ids:
            self._wake(payment_id)
        task = asyncio.create_task(self._notify_others(ids))
        self._notifies.add(task)
        task.add_done_callback(self._notifies.discard)

    async def _notify_others(self, payment_ids: list[str]) -> None:
        for payload in _payloads(self._instance, payment_ids):
            try:
                await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            except Exception as error:
                # Other instances' waiters still answer at their deadline with what they
                # load then; nothing is lost, a response is only later.
                log.warning("payment_update_notify_failed", error=repr(error))
                return

    def _on_notify(self, payload: str) -> None:
        instance, _, ids = payload.partition("|")
        if instance == self._instance:
            return
        for payment_id in ids.split(","):
            self._wake(payment_id)

    def _wake(self, payment_id: str) -> None:
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


def _payloads(instance: str, payment_ids: list[str]) -> Iterator[str]:
    """NOTIFY payloads `instance|id,id,...`, each under PostgreSQL's size limit."""
    chunk: list[str] = []
    size = len(instance) + 1
    for payment_id in payment_ids:
        if chunk and size + len(payment_id) + 1 > _PAYLOAD_BYTES_MAX:
            yield f"{instance}|{','.join(chunk)}"
            chunk, size = [], len(instance) + 1
        chunk.append(payment_id)
        size += len(payment_id) + 1
    if chunk:
        yield f"{instance}|{','.join(chunk)}"
