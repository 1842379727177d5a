"""Order facts published by upstream order systems on the `orders` topic.

The gateway takes them in exactly as it takes `POST /v1/payments`: an `OrderPlaced`
creates the order's payment, an `OrderCancelled` cancels it while it is unpaid. The
payment of an order has a stable id derived from the merchant and the order, so an
order published twice (even with two event ids) still has one payment.
"""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import Field

from schemas.common import Channel
from schemas.envelope import Contract, Event
from schemas.money import CurrencyCode, PositiveAmountMinor
from schemas.topics import Topic

_ORDER_PAYMENT_NAMESPACE = uuid.UUID("6f1d2c1e-3b7a-4d55-9a3e-6f0c2b9d8e41")


def order_payment_id(merchant_id: str, order_id: str) -> str:
    """The id of the payment an order creates; the same for every delivery of the order."""
    return f"pay_{uuid.uuid5(_ORDER_PAYMENT_NAMESPACE, f'{merchant_id}/{order_id}').hex}"


class OrderPlacedPayload(Contract):
    order_id: str = Field(min_length=1, max_length=128)
    amount_minor: PositiveAmountMinor
    currency: CurrencyCode
    channel: Channel
    description: str = Field(default="", max_length=1000)


class OrderPlaced(Event):
    topic: ClassVar[Topic] = Topic.ORDERS
    event_type: Literal["OrderPlaced"] = "OrderPlaced"
    schema_version: Literal[1] = 1
    payload: OrderPlacedPayload


class OrderCancelledPayload(Contract):
    order_id: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="order_cancelled", min_length=1, max_length=200)


class OrderCancelled(Event):
    topic: ClassVar[Topic] = Topic.ORDERS
    event_type: Literal["OrderCancelled"] = "OrderCancelled"
    schema_version: Literal[1] = 1
    payload: OrderCancelledPayload
