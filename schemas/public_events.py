"""Events as merchants see them: in webhooks and from `GET /v1/events`, one shape.

A public event is `{"id", "type", "created", "livemode", "data": {"object": ...}}` with a
dotted type such as `payment.succeeded`, as in Stripe's Events API. Only the events named
here are public; the rest of the bus is internal.
"""

from __future__ import annotations

from typing import Any

from schemas.envelope import Event
from schemas.operations import (
    ChannelDiscrepancyRecorded,
    ChannelOperationUnresolved,
    DeadLetterRecorded,
)
from schemas.payments import PaymentCanceled, PaymentExpired, PaymentFailed, PaymentSucceeded
from schemas.payouts import PayoutFailed, PayoutPaid
from schemas.refunds import RefundFailed, RefundSucceeded
from schemas.risk import RiskAlertRaised
from schemas.webhooks import WebhookEndpointDisabled

# A new public event is one line here plus its `data.object` in `public_object` below.
PUBLIC_EVENT_TYPES: dict[type[Event], str] = {
    PaymentSucceeded: "payment.succeeded",
    PaymentFailed: "payment.failed",
    PaymentCanceled: "payment.canceled",
    PaymentExpired: "payment.expired",
    RefundSucceeded: "refund.succeeded",
    RefundFailed: "refund.failed",
    PayoutPaid: "payout.paid",
    PayoutFailed: "payout.failed",
    WebhookEndpointDisabled: "webhook_endpoint.disabled",
}

# Events for operations, not merchants: the notifier sends them to the ops webhook only.
OPS_EVENT_TYPES: dict[type[Event], str] = {
    RiskAlertRaised: "risk.alert",
    DeadLetterRecorded: "dead_letter.recorded",
    ChannelDiscrepancyRecorded: "channel.discrepancy",
    ChannelOperationUnresolved: "channel_operation.unresolved",
}
# What the ops webhook receives: operations' own events, and the merchants' events that
# need someone at the platform to look (an endpoint disabled for failing).
OPS_WEBHOOK_EVENTS: tuple[str, ...] = (
    "risk.alert",
    "dead_letter.recorded",
    "channel.discrepancy",
    "channel_operation.unresolved",
    "webhook_endpoint.disabled",
)

PaymentOutcome = PaymentSucceeded | PaymentFailed | PaymentCanceled | PaymentExpired
_STATUS_OF: dict[type[Event], str] = {
    PaymentSucceeded: "succeeded",
    PaymentFailed: "failed",
    PaymentCanceled: "canceled",
    PaymentExpired: "expired",
}


class NotPublic(ValueError):
    """An event merchants never see. A wiring mistake, never merchant input."""


def public_event_type(event: Event) -> str:
    """The dotted public type of `event`. Raises NotPublic for an internal event."""
    name = PUBLIC_EVENT_TYPES.get(type(event)) or OPS_EVENT_TYPES.get(type(event))
    if name is None:
        raise NotPublic(f"no public type for {type(event).__name__}")
    return name


def _payment_object(event: PaymentOutcome) -> dict[str, Any]:
    payload = event.payload
    failure: dict[str, Any] | None = None
    if isinstance(event, PaymentFailed):
        failure = {
            "code": event.payload.failure.code,
            "message": event.payload.failure.message,
            "rule_ids": list(event.payload.failure.rule_ids),
        }
    return {
        "id": event.aggregate_id,
        "object": "payment",
        "merchant_id": event.merchant_id,
        "order_id": payload.order_id,
        "amount": payload.amount_minor,
        "currency": payload.currency,
        "channel": payload.channel.value,
        "description": payload.description,
        "status": _STATUS_OF[type(event)],
        "failure": failure,
    }


def _refund_object(event: RefundSucceeded | RefundFailed) -> dict[str, Any]:
    payload = event.payload
    failure: dict[str, Any] | None = None
    if isinstance(event, RefundFailed):
        failure = {"code": event.payload.failure.code, "message": event.payload.failure.message}
    return {
        "id": payload.refund_id,
        "object": "refund",
        "payment_id": event.aggregate_id,
        "merchant_id": event.merchant_id,
        "order_id": payload.order_id,
        "amount": payload.amount_minor,
        "currency": payload.currency,
        "channel": payload.channel.value,
        "reason": payload.reason,
        "initiator": payload.initiator.value,
        "status": "succeeded" if isinstance(event, RefundSucceeded) else "failed",
        "failure": failure,
    }


def _payout_object(event: PayoutPaid | PayoutFailed) -> dict[str, Any]:
    payload = event.payload
    paid = isinstance(event, PayoutPaid)
    return {
        "id": payload.payout_id,
        "object": "payout",
        "merchant_id": event.merchant_id,
        "amount": payload.amount_minor,
        "currency": payload.currency,
        "status": "paid" if paid else "failed",
        "bank_reference": event.payload.bank_reference if isinstance(event, PayoutPaid) else None,
        "failure": None
        if isinstance(event, PayoutPaid)
        else {"code": event.payload.failure.code, "message": event.payload.failure.message},
    }


def _dead_letter_object(event: DeadLetterRecorded) -> dict[str, Any]:
    # The id is the letter's own, as `payrail dead-letters show` and `redrive` take it, so
    # an operator can act on the alert without translating ids.
    payload = event.payload
    return {
        "id": str(payload.dead_letter_id),
        "object": "dead_letter",
        "service": payload.service,
        "consumer": payload.consumer,
        "source_topic": payload.source_topic,
        "source_partition": payload.source_partition,
        "source_offset": payload.source_offset,
        "message_id": None if payload.message_id is None else str(payload.message_id),
        "message_type": payload.message_type,
        "reason": payload.reason,
    }


def public_object(event: Event) -> dict[str, Any]:
    """The `data.object` of a public event. Raises NotPublic for an internal event."""
    if isinstance(event, PaymentOutcome):
        return _payment_object(event)
    if isinstance(event, RefundSucceeded | RefundFailed):
        return _refund_object(event)
    if isinstance(event, PayoutPaid | PayoutFailed):
        return _payout_object(event)
    if isinstance(event, RiskAlertRaised):
        return {"object": "risk_alert", **event.payload.model_dump(mode="json")}
    if isinstance(event, DeadLetterRecorded):
        return _dead_letter_object(event)
    if isinstance(event, ChannelDiscrepancyRecorded):
        return {
            "id": event.aggregate_id,
            "object": "channel_discrepancy",
            "merchant_id": event.merchant_id,
            **event.payload.model_dump(mode="json"),
        }
    if isinstance(event, ChannelOperationUnresolved):
        return {
            "id": event.aggregate_id,
            "object": "channel_operation",
            **event.payload.model_dump(mode="json"),
        }
    if isinstance(event, WebhookEndpointDisabled):
        return {
            "id": event.payload.endpoint_id,
            "object": "webhook_endpoint",
            "merchant_id": event.merchant_id,
            "url": event.payload.url,
            "enabled": False,
            "failing_since": event.payload.failing_since.isoformat(),
            "disabled_at": event.payload.disabled_at.isoformat(),
            "disabled_reason": event.payload.reason,
        }
    raise NotPublic(f"no public object for {type(event).__name__}")


def public_event_document(event: Event) -> dict[str, Any]:
    """The whole public event. Raises NotPublic for an internal event."""
    return {
        "id": str(event.event_id),
        "type": public_event_type(event),
        "created": int(event.occurred_at.timestamp()),
        "livemode": False,
        "data": {"object": public_object(event)},
    }
