"""Taking in new payments, the same way from `POST /v1/payments` and from the `orders`
topic: who the merchant is, whether it may take the payment, what is asked."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from asyncpg import Pool

from schemas.common import Channel, CurrencyNotPriced, FeePlan
from schemas.merchants import MerchantProfile, MerchantStatus
from schemas.payments import Payer, PaymentRequest, Split, SplitRefused, check_splits
from services.common.db import Connection


class PaymentRefused(Exception):
    """The merchant may not take this payment. `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    active: bool
    channels: tuple[Channel, ...]  # in the merchant's order of preference
    fee_plans: dict[Channel, FeePlan]
    payment_expiry_minutes: int
    refund_on_order_cancel: bool

    @classmethod
    def of(cls, merchant_id: str, profile: MerchantProfile) -> Merchant:
        return cls(
            merchant_id=merchant_id,
            active=profile.status is MerchantStatus.ACTIVE,
            channels=tuple(profile.channels),
            fee_plans=dict(profile.fee_plans),
            payment_expiry_minutes=profile.payment_expiry_minutes,
            refund_on_order_cancel=profile.refund_on_order_cancel,
        )


async def load_merchant(connection: Connection, merchant_id: str) -> Merchant | None:
    profile = await connection.fetchval(
        "SELECT profile FROM merchants WHERE merchant_id = $1", merchant_id
    )
    return Merchant.of(merchant_id, MerchantProfile.model_validate(profile)) if profile else None


async def active_merchant_ids(
    connection: Connection | Pool, merchant_ids: Sequence[str]
) -> set[str]:
    """Which of `merchant_ids` are merchants that are active now."""
    if not merchant_ids:
        return set()
    rows = await connection.fetch(
        "SELECT merchant_id FROM merchants WHERE merchant_id = ANY($1::text[])"
        " AND profile->>'status' = $2",
        list(merchant_ids),
        MerchantStatus.ACTIVE.value,
    )
    return {row["merchant_id"] for row in rows}


def choose_channel(
    merchant: Merchant,
    candidates: Sequence[Channel],
    is_available: Callable[[Channel], bool] = lambda _channel: True,
) -> Channel:
    """The first of `candidates` (all the merchant's channels when empty) that the
    merchant has enabled and that is not failing (circuit open).

    Raises PaymentRefused: `channel_not_enabled` when none is enabled,
    `channel_unavailable` when every enabled one is failing.
    """
    wanted = candidates or merchant.channels
    enabled = [channel for channel in wanted if channel in merchant.channels]
    if not enabled:
        names = ", ".join(channel.value for channel in wanted)
        raise PaymentRefused(
            "channel_not_enabled", f"channel {names} is not enabled for this merchant"
        )
    for channel in enabled:
        if is_available(channel):
            return channel
    names = ", ".join(channel.value for channel in enabled)
    raise PaymentRefused(
        "channel_unavailable", f"channel {names} is failing at the moment; try again later"
    )


def payment_request(
    merchant: Merchant,
    *,
    order_id: str,
    amount_minor: int,
    currency: str,
    channel: Channel,
    description: str,
    requested_at: datetime,
    payer: Payer | None = None,
    metadata: dict[str, str] | None = None,
    expires_in: timedelta | None = None,
    splits: Sequence[Split] = (),
    active_recipients: Collection[str] = (),
) -> PaymentRequest:
    """The request for a new payment, with the merchant's fee plan and expiry (or the
    sooner `expires_in`).

    Raises PaymentRefused (`merchant_suspended`, `channel_not_enabled`,
    `expiry_too_long` when `expires_in` exceeds the merchant's payment expiry,
    `currency_not_priced` when the channel's fee plan sets no fixed fee in `currency`, and for
    `splits`: `split_recipient_unknown` when a recipient is not in `active_recipients` or
    is the merchant itself, `split_recipient_repeated`, `split_exceeds_available`).
    """
    if not merchant.active:
        raise PaymentRefused("merchant_suspended", f"merchant {merchant.merchant_id} is suspended")
    expiry_max = timedelta(minutes=merchant.payment_expiry_minutes)
    if expires_in is not None and expires_in > expiry_max:
        raise PaymentRefused(
            "expiry_too_long", f"a payment of this merchant expires within {expiry_max}"
        )
    channel = choose_channel(merchant, [channel])
    for split in splits:
        if (
            split.recipient_id == merchant.merchant_id
            or split.recipient_id not in active_recipients
        ):
            raise PaymentRefused(
                "split_recipient_unknown",
                f"{split.recipient_id} is not an active merchant that can receive a share",
            )
    try:
        fee_plan = merchant.fee_plans[channel].for_currency(currency)
    except CurrencyNotPriced as refusal:
        raise PaymentRefused(refusal.code, f"channel {channel.value}: {refusal}") from refusal
    try:
        check_splits(splits, amount_minor, currency, fee_plan)
    except SplitRefused as refusal:
        raise PaymentRefused(refusal.code, str(refusal)) from refusal
    return PaymentRequest(
        order_id=order_id,
        amount_minor=amount_minor,
        currency=currency,
        channel=channel,
        description=description,
        fee_plan=fee_plan,
        expires_at=requested_at + (expires_in or expiry_max),
        payer=payer,
        metadata=metadata or {},
        splits=tuple(splits),
    )
