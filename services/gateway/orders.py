"""Order intake from the `orders` topic: the same payment an HTTP request would create.

A refused order (unknown or suspended merchant, channel not enabled) cannot be answered
on the bus, so it is dead-lettered with the reason for the upstream system's operators.
"""

from __future__ import annotations

import structlog

from schemas import new_command
from schemas.orders import OrderCancelled, OrderPlaced, order_payment_id
from schemas.payments import CancelPayment, CancelPaymentPayload, CreatePayment
from services.common.clock import Clock
from services.common.db import Connection
from services.common.event_store import enqueue_commands
from services.gateway.intake import PaymentRefused, load_merchant, payment_request

log = structlog.get_logger(__name__)


async def place_order(connection: Connection, event: OrderPlaced, *, clock: Clock) -> None:
    """Create the order's payment. Raises PaymentRefused (dead-lettered) when the merchant
    may not take it. The expiry counts from when the order was placed, so a redelivered
    order asks for exactly the same payment."""
    merchant = await load_merchant(connection, event.merchant_id)
    if merchant is None:
        raise PaymentRefused("merchant_not_found", f"no merchant {event.merchant_id}")
    order = event.payload
    request = payment_request(
        merchant,
        order_id=order.order_id,
        amount_minor=order.amount_minor,
        currency=order.currency,
        channel=order.channel,
        description=order.description,
        requested_at=event.occurred_at,
    )
    payment_id = order_payment_id(event.merchant_id, order.order_id)
    command = new_command(
        CreatePayment,
        request,
        aggregate_id=payment_id,
        merchant_id=event.merchant_id,
        producer="gateway",
        issued_at=clock.now(),
        correlation_id=event.correlation_id,
        causation_id=str(event.event_id),
    )
    await enqueue_commands(connection, [command])
    log.info("order_placed", order_id=order.order_id, payment_id=payment_id)


async def cancel_order(connection: Connection, event: OrderCancelled, *, clock: Clock) -> None:
    """Cancel the order's payment while it is unpaid; a paid one is refunded (what is
    still refundable) when the merchant's policy says so, and stays paid otherwise."""
    merchant = await load_merchant(connection, event.merchant_id)
    if merchant is None:
        raise PaymentRefused("merchant_not_found", f"no merchant {event.merchant_id}")
    payment_id = order_payment_id(event.merchant_id, event.payload.order_id)
    cancel = CancelPaymentPayload(
        reason=event.payload.reason, refund_if_paid=merchant.refund_on_order_cancel
    )
    command = new_command(
        CancelPayment,
        cancel,
        aggregate_id=payment_id,
        merchant_id=event.merchant_id,
        producer="gateway",
        issued_at=clock.now(),
        correlation_id=event.correlation_id,
        causation_id=str(event.event_id),
    )
    await enqueue_commands(connection, [command])
    log.info("order_cancelled", order_id=event.payload.order_id, payment_id=payment_id)
