"""What every channel adapter offers the gateway: its interface, result types and errors.

An adapter translates between payrail's words (payment id, amount in minor units) and one
channel's protocol. The gateway decides what to do with the results; the adapter never
touches the database or the broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class PreparedTrade:
    """The channel accepted the payment and is waiting for the payer."""

    channel_trade_id: str
    pay_url: str
    qr_code: str | None


@dataclass(frozen=True)
class VerifiedPaymentNotification:
    """A channel's callback whose signature and fields were checked: the payer paid."""

    notification_id: str
    channel_trade_id: str
    payment_id: str
    amount_minor: int
    currency: str
    paid_at: datetime  # Timezone-aware, in UTC.


@dataclass(frozen=True)
class RefundAccepted:
    """The channel took the refund request; its final result arrives later (notification
    or query)."""

    channel_refund_id: str


@dataclass(frozen=True)
class VerifiedRefundNotification:
    """A checked answer about one refund: it succeeded, or the channel gave up on it.

    `refund_id` is payrail's refund id, which every channel echoes (Alipay's
    `out_request_no`, WeChat Pay's `out_refund_no`); `failure_code` is a stable lowercase
    code and is set exactly when `succeeded` is False.
    """

    notification_id: str
    refund_id: str
    payment_id: str
    channel_refund_id: str
    amount_minor: int
    currency: str
    succeeded: bool
    finished_at: datetime  # Timezone-aware, in UTC.
    failure_code: str | None = None
    failure_message: str = ""


@dataclass(frozen=True)
class IgnoredNotification:
    """A genuine, correctly signed callback that changes nothing, e.g. an earlier trade
    status arriving after a later one (out of order). It is acknowledged and not recorded."""

    notification_id: str
    reason: str


ChannelNotification = VerifiedPaymentNotification | VerifiedRefundNotification | IgnoredNotification


@dataclass(frozen=True)
class NotificationAnswer:
    """What the gateway answers a channel's callback; each channel has its own convention
    for "received, stop retrying"."""

    status_code: int
    body: str
    media_type: str = "text/plain"


class ChannelError(Exception):
    """Base of every error an adapter raises on purpose."""


class ChannelRejected(ChannelError):
    """The channel answered and said no. Permanent: retrying the same request will not help.

    `code` is a stable lowercase code (for Alipay, its `sub_code` lowercased, e.g.
    `trade_conflict`); `message` is the channel's human-readable explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ChannelUnavailable(ChannelError):
    """The outcome is unknown (timeout, connection error, 5xx, unverifiable response).

    Try again later with the same payment id; channels treat that id as an idempotency key.
    """


class InvalidNotification(ChannelError):
    """A callback that must not be trusted: bad signature, missing field, stale, wrong app.

    `reason` is a stable lowercase code such as `bad_signature` or `stale`; the message
    adds details for the log.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ChannelAdapter(Protocol):
    """One payment channel, as the gateway sees it."""

    async def prepare(
        self, *, payment_id: str, amount_minor: int, currency: str, description: str
    ) -> PreparedTrade | VerifiedPaymentNotification:
        """Create (or find again) the channel's trade for `payment_id`.

        Returns the trade waiting for the payer, or, for a channel that answers at once
        (a card authorization captured in the same call), the proof that it was paid.
        Raises ChannelRejected when the channel refuses (a card decline included),
        ChannelUnavailable when the outcome is unknown. Safe to retry: the payment id is
        the channel's idempotency key.
        """
        ...

    async def refund(
        self,
        *,
        payment_id: str,
        refund_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
    ) -> RefundAccepted:
        """Ask the channel to refund part or all of a paid payment.

        Safe to retry: `refund_id` is the channel's idempotency key for the refund.
        Raises ChannelRejected when the channel refuses at once (e.g. the amount exceeds
        what is refundable), ChannelUnavailable when the outcome is unknown.
        """
        ...

    async def query_refund(
        self, *, payment_id: str, refund_id: str
    ) -> VerifiedRefundNotification | None:
        """Ask for a refund's final result; None while it is still processing or unknown.
        The id of what it returns is `query:<channel refund id>`. Raises ChannelUnavailable
        when the answer is unknown."""
        ...

    async def query(self, *, payment_id: str) -> VerifiedPaymentNotification | None:
        """Ask the channel whether the payer paid. Returns what a success notification
        would have proved (its id `query:<trade id>`), or None while unpaid, closed or
        unknown. Raises ChannelUnavailable when the answer is unknown."""
        ...

    async def close(self, *, payment_id: str) -> None:
        """Close the channel's trade for `payment_id` so the payer can no longer pay it.

        Returns when the trade is closed (also when it was closed already) or never
        existed; safe to retry. Raises ChannelRejected with code `trade_already_paid` when
        the payer already paid (the payment's notification is on its way), ChannelRejected
        with another code when the channel refuses for another reason, and
        ChannelUnavailable when the outcome is unknown (timeout, connection error, 5xx,
        an answer whose signature does not verify).
        """
        ...

    def read_notification(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime
    ) -> ChannelNotification:
        """Check a callback's raw body and headers (signature, freshness, fields) without
        any I/O, and say what it proves. `headers` have lowercase names.

        Raises InvalidNotification when the callback must not be trusted.
        """
        ...

    def notification_answer(self, *, accepted: bool) -> NotificationAnswer:
        """The answer that stops the channel's retries (accepted) or asks for a retry."""
        ...
