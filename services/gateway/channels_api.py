"""Channel callbacks: signed asynchronous notifications from the payment channels."""

from __future__ import annotations

from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from schemas.common import Channel
from services.common.event_store import ConcurrencyConflict
from services.gateway.channel_results import UnknownChannelTrade, record_channel_notification
from services.gateway.channels.base import InvalidNotification

log = structlog.get_logger(__name__)
router = APIRouter(tags=["channels"], include_in_schema=False)

# Alipay-style channels stop retrying when the body is exactly "success".
ACKNOWLEDGED = "success"
NOT_ACKNOWLEDGED = "fail"
NOTIFICATION_SIZE_MAX_BYTES = 16_384
NOTIFICATION_FIELD_COUNT_MAX = 64


@router.post("/v1/channels/{channel}/notify")
async def channel_notification(channel: str, request: Request) -> PlainTextResponse:
    """Verify a channel notification and record it once. Every rejection is logged with
    its reason and changes nothing; the channel retries what we do not acknowledge."""
    adapters = request.app.state.channels
    try:
        adapter = adapters[Channel(channel)]
    except (ValueError, KeyError):
        log.warning("channel_notification_rejected", channel=channel, reason="unknown channel")
        return PlainTextResponse(NOT_ACKNOWLEDGED, status_code=404)
    body = await request.body()
    if len(body) > NOTIFICATION_SIZE_MAX_BYTES:
        log.warning("channel_notification_rejected", channel=channel, reason="too large")
        return PlainTextResponse(NOT_ACKNOWLEDGED, status_code=413)
    try:
        fields = dict(
            parse_qsl(
                body.decode(), keep_blank_values=True, max_num_fields=NOTIFICATION_FIELD_COUNT_MAX
            )
        )
    except (UnicodeDecodeError, ValueError) as error:
        log.warning("channel_notification_rejected", channel=channel, reason=repr(error))
        return PlainTextResponse(NOT_ACKNOWLEDGED, status_code=400)
    context = request.app.state.context
    try:
        notification = adapter.verify_notification(fields, now=context.clock.now())
    except InvalidNotification as error:
        log.warning("channel_notification_rejected", channel=channel, reason=error.reason)
        return PlainTextResponse(NOT_ACKNOWLEDGED, status_code=400)
    try:
        async with context.pool.acquire() as connection, connection.transaction():
            recorded = await record_channel_notification(
                connection, Channel(channel), notification, clock=context.clock
            )
    except UnknownChannelTrade as error:
        log.warning("channel_notification_rejected", channel=channel, reason=str(error))
        return PlainTextResponse(NOT_ACKNOWLEDGED, status_code=400)
    except ConcurrencyConflict:
        return PlainTextResponse(NOT_ACKNOWLEDGED, status_code=503)
    log.info(
        "channel_notification_recorded" if recorded else "channel_notification_duplicate",
        channel=channel,
        payment_id=notification.payment_id,
        notification_id=notification.notification_id,
    )
    return PlainTextResponse(ACKNOWLEDGED)
