"""Taking in new payments, the same way from `POST /v1/payments` and from the `orders`
topic: who the merchant is, whether it may take the payment, what is asked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.common import Channel, FeePlan
from schemas.merchants import MerchantProfile, MerchantStatus
from schemas.payments import PaymentRequest
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
    channels: frozenset[Channel]
    fee_plans: dict[Channel, FeePlan]
    payment_expiry_minutes: int

    @classmethod
    def of(cls, merchant_id: str, profile: MerchantProfile) -> Merchant:
        return cls(
            merchant_id=merchant_id,
            active=profile.status is MerchantStatus.ACTIVE,
            channels=frozenset(profile.channels),
            fee_plans=dict(profile.fee_plans),
            payment_expiry_minutes=profile.payment_expiry_minutes,
        )


async def load_merchant(connection: Connection, merchant_id: str) -> Merchant | None:
    profile = await connection.fetchval(
        "SELECT profile FROM merchants WHERE merchant_id = $1", merchant_id
    )
    return Merchant.of(merchant_id, MerchantProfile.model_validate(profile)) if profile else None


def payment_request(
    merchant: Merchant,
    *,
    order_id: str,
    amount_minor: int,
    currency: str,
    channel: Channel,
    description: str,
    requested_at: datetime,
) -> PaymentRequest:
    """The request for a new payment, with the merchant's fee plan and expiry.

    Raises PaymentRefused (`merchant_suspended`, `channel_not_enabled`).
    """
    if not merchant.active:
        raise PaymentRefused("merchant_suspended", f"merchant {merchant.merchant_id} is suspended")
    if channel not in merchant.channels:
        raise PaymentRefused(
            "channel_not_enabled", f"channel {channel.value} is not enabled for this merchant"
        )
    return PaymentRequest(
        order_id=order_id,
        amount_minor=amount_minor,
        currency=currency,
        channel=channel,
        description=description,
        fee_plan=merchant.fee_plans[channel],
        expires_at=requested_at + timedelta(minutes=merchant.payment_expiry_minutes),
    )
