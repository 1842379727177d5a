"""Asynchronous notifications, sent the way payment channels send them.

A channel module describes one notification as an `OutboundNotification`: where it goes,
how each attempt's signed request is rendered (every attempt carries its own timestamp
and therefore its own signature) and which answer acknowledges it. The sender delivers it
by HTTP POST on a fixed retry schedule until it is acknowledged. Sending happens in
background tasks owned by a `NotificationSender`, which the app starts and closes in its
lifespan.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import urlencode

import httpx
import structlog

from services.common.clock import Clock
from services.common.invariant import InvariantViolation, invariant
from services.gateway.channels import alipay_protocol as protocol
from services.psp_simulator.store import Refund, Trade

logger = structlog.get_logger(__name__)

# An acknowledgement is a few bytes; reading more of a receiver's answer is pointless.
RESPONSE_BYTES_MAX: Final = 1024


class AttemptOutcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    NOT_ACKNOWLEDGED = "not_acknowledged"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    DROPPED = "dropped"


def new_notify_id() -> str:
    return uuid.uuid4().hex


def notification_fields(
    trade: Trade, *, notify_id: str, notify_time_s: int, secret: str, waiting: bool = False
) -> dict[str, str]:
    """Return the signed form fields of one notification attempt for a paid trade, or, with
    `waiting`, of the earlier "waiting for the payer" status of the same trade."""
    if trade.gmt_payment is None:
        raise InvariantViolation(f"trade {trade.trade_no} is notified but not paid")
    if waiting:
        return protocol.signed(
            {
                "notify_id": notify_id,
                "notify_time": str(notify_time_s),
                "notify_type": protocol.NOTIFY_TYPE_TRADE_STATUS_SYNC,
                "app_id": trade.app_id,
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "trade_status": protocol.TRADE_STATUS_WAIT_BUYER_PAY,
                "total_amount_minor": str(trade.total_amount_minor),
                "currency": trade.currency,
            },
            secret,
        )
    return protocol.signed(
        {
            "notify_id": notify_id,
            "notify_time": str(notify_time_s),
            "notify_type": protocol.NOTIFY_TYPE_TRADE_STATUS_SYNC,
            "app_id": trade.app_id,
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": protocol.TRADE_STATUS_SUCCESS,
            "total_amount_minor": str(trade.total_amount_minor),
            "currency": trade.currency,
            "gmt_payment": trade.gmt_payment.isoformat(),
        },
        secret,
    )


def refund_notification_fields(
    refund: Refund, *, notify_id: str, notify_time_s: int, secret: str
) -> dict[str, str]:
    """Return the signed form fields of one notification attempt for a finished refund:
    `refund_status_sync` with REFUND_SUCCESS, or REFUND_FAIL and its `fail_reason`."""
    if refund.gmt_refund is None or refund.refund_status not in (
        protocol.REFUND_STATUS_SUCCESS,
        protocol.REFUND_STATUS_FAIL,
    ):
        raise InvariantViolation(f"refund {refund.refund_no} is notified but not finished")
    fields = {
        "notify_id": notify_id,
        "notify_time": str(notify_time_s),
        "notify_type": protocol.NOTIFY_TYPE_REFUND_STATUS_SYNC,
        "app_id": refund.app_id,
        "trade_no": refund.trade_no,
        "out_trade_no": refund.out_trade_no,
        "out_request_no": refund.out_request_no,
        "refund_no": refund.refund_no,
        "refund_status": refund.refund_status,
        "refund_amount_minor": str(refund.refund_amount_minor),
        "currency": refund.currency,
        "gmt_refund": refund.gmt_refund.isoformat(),
    }
    if refund.refund_status == protocol.REFUND_STATUS_FAIL:
        fields["fail_reason"] = refund.fail_reason
    return protocol.signed(fields, secret)


def is_acknowledgement(status_code: int, body: bytes) -> bool:
    """An Alipay-style receiver stops retries only with a 2xx answer whose body is `success`."""
    return 200 <= status_code < 300 and body.strip() == protocol.NOTIFY_ACKNOWLEDGEMENT.encode()


@dataclass(frozen=True)
class RenderedAttempt:
    """One attempt's request: the raw body and its headers (content type included)."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class OutboundNotification:
    """One fact a channel notifies, e.g. "trade X was paid".

    `render(notify_id, now_s)` builds the signed request of one attempt; the same
    `notify_id` is used for every retry of one delivery, and a duplicate delivery gets a
    new one. `acknowledged(status_code, body)` says whether the receiver's answer stops
    the retries.
    """

    key: str
    url: str
    render: Callable[[str, int], RenderedAttempt]
    acknowledged: Callable[[int, bytes], bool]


def alipay_trade_notification(
    trade: Trade, secret: str, *, waiting: bool = False
) -> OutboundNotification:
    """The Alipay-style form notification of a paid trade (or of its earlier waiting status)."""

    def render(notify_id: str, now_s: int) -> RenderedAttempt:
        fields = notification_fields(
            trade, notify_id=notify_id, notify_time_s=now_s, secret=secret, waiting=waiting
        )
        return RenderedAttempt(
            body=urlencode(fields).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    return OutboundNotification(
        key=trade.trade_no, url=trade.notify_url, render=render, acknowledged=is_acknowledgement
    )


def alipay_refund_notification(refund: Refund, secret: str) -> OutboundNotification:
    """The Alipay-style form notification of a finished refund, sent to the refund's own
    notify_url."""

    def render(notify_id: str, now_s: int) -> RenderedAttempt:
        fields = refund_notification_fields(
            refund, notify_id=notify_id, notify_time_s=now_s, secret=secret
        )
        return RenderedAttempt(
            body=urlencode(fields).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

    return OutboundNotification(
        key=refund.refund_no, url=refund.notify_url, render=render, acknowledged=is_acknowledgement
    )


# Delivery attempts the sender remembers for inspection (`GET /_sim/notifications`).
ATTEMPT_RECORDS_MAX: Final = 10_000


@dataclass(frozen=True)
class AttemptRecord:
    reference: str
    key: str
    notify_id: str
    attempt: int
    outcome: AttemptOutcome


class NotificationSender:
    """Owns the background tasks that deliver notifications; `close` cancels them all."""

    def __init__(
        self,
        *,
        http_client: httpx.AsyncClient,
        clock: Clock,
        retry_schedule_ms: Sequence[int],
        timeout_ms: int,
        concurrent_sends_max: int,
        pending_count_max: int,
        drop_first_count: int = 0,
    ) -> None:
        invariant(len(retry_schedule_ms) > 0, "the retry schedule needs at least one attempt")
        invariant(all(delay_ms >= 0 for delay_ms in retry_schedule_ms), "delays are >= 0")
        invariant(timeout_ms > 0, "timeout_ms must be positive")
        invariant(pending_count_max > 0, "pending_count_max must be positive")
        self._http_client = http_client
        self._clock = clock
        self._retry_schedule_ms = tuple(retry_schedule_ms)
        self._timeout_s = timeout_ms / 1000
        self._send_slots = asyncio.Semaphore(concurrent_sends_max)
        self._pending_count_max = pending_count_max
        self._drop_first_count = drop_first_count
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempts: deque[AttemptRecord] = deque(maxlen=ATTEMPT_RECORDS_MAX)
        self._closed = False

    @property
    def pending_count(self) -> int:
        return len(self._tasks)

    def schedule(
        self,
        notifications: Sequence[OutboundNotification],
        *,
        duplicate: bool = False,
        delay_ms: int = 0,
        reference: str = "",
    ) -> bool:
        """Deliver `notifications` one after the other, each on the full retry schedule
        (the next starts once the previous is acknowledged or given up). With `duplicate`,
        each acknowledged one is delivered once more under a new notify id; `delay_ms`
        holds the first attempt back (a late notification). `reference` (the merchant's
        payment id) labels the attempts in `attempts_about`. Returns False when nothing was
        started. Must be called from the running event loop.
        """
        invariant(len(notifications) > 0, "schedule at least one notification")
        key = notifications[0].key
        if self._closed:
            logger.warning("notify_not_scheduled", key=key, reason="closed")
            return False
        if len(self._tasks) >= self._pending_count_max:
            logger.warning("notify_not_scheduled", key=key, reason="queue_full")
            return False
        task = asyncio.create_task(
            self._notify(tuple(notifications), duplicate, delay_ms / 1000, reference),
            name=f"notify-{key}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return True

    async def close(self) -> None:
        """Cancel every pending notification and wait until its task has ended."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("notify_task_failed", task=task.get_name(), exc_info=task.exception())

    def attempts_about(self, reference: str) -> list[AttemptRecord]:
        """The recorded attempts labelled with `reference`, oldest first."""
        return [record for record in self._attempts if record.reference == reference]

    async def _notify(
        self,
        notifications: tuple[OutboundNotification, ...],
        duplicate: bool,
        delay_s: float,
        reference: str,
    ) -> None:
        await asyncio.sleep(delay_s)
        for notification in notifications:
            delivered = await self._deliver(notification, new_notify_id(), reference)
            if delivered and duplicate:
                await self._deliver(notification, new_notify_id(), reference)

    async def _deliver(
        self, notification: OutboundNotification, notify_id: str, reference: str
    ) -> bool:
        """Run the retry schedule for one notification; True once it is acknowledged."""
        attempt_count = len(self._retry_schedule_ms)
        for attempt, delay_ms in enumerate(self._retry_schedule_ms, start=1):
            await asyncio.sleep(delay_ms / 1000)
            if attempt <= self._drop_first_count:
                outcome, status_code = AttemptOutcome.DROPPED, None
            else:
                async with self._send_slots:
                    outcome, status_code = await self._attempt(notification, notify_id)
            logger.info(
                "notify_attempt",
                key=notification.key,
                notify_id=notify_id,
                attempt=attempt,
                attempt_count=attempt_count,
                status=outcome.value,
                http_status=status_code,
            )
            self._attempts.append(
                AttemptRecord(reference, notification.key, notify_id, attempt, outcome)
            )
            if outcome is AttemptOutcome.ACKNOWLEDGED:
                return True
        logger.warning(
            "notify_gave_up", key=notification.key, notify_id=notify_id, attempts=attempt_count
        )
        return False

    async def _attempt(
        self, notification: OutboundNotification, notify_id: str
    ) -> tuple[AttemptOutcome, int | None]:
        rendered = notification.render(notify_id, int(self._clock.now().timestamp()))
        try:
            # httpx's timeout bounds each phase; the outer one bounds the whole attempt.
            async with asyncio.timeout(self._timeout_s):
                async with self._http_client.stream(
                    "POST",
                    notification.url,
                    content=rendered.body,
                    headers=rendered.headers,
                    timeout=httpx.Timeout(self._timeout_s),
                    follow_redirects=False,
                ) as response:
                    body = await _read_prefix(response, RESPONSE_BYTES_MAX)
        except TimeoutError:
            return AttemptOutcome.TIMEOUT, None
        except httpx.HTTPError:
            return AttemptOutcome.CONNECTION_ERROR, None
        if notification.acknowledged(response.status_code, body):
            return AttemptOutcome.ACKNOWLEDGED, response.status_code
        return AttemptOutcome.NOT_ACKNOWLEDGED, response.status_code


async def _read_prefix(response: httpx.Response, byte_count_max: int) -> bytes:
    """Read at most about `byte_count_max` bytes of the body and ignore the rest."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) >= byte_count_max:
            break
    return bytes(body[:byte_count_max])
