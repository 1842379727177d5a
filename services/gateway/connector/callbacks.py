"""The connector's callbacks: signed asynchronous notifications from the payment channels
and the bank rail, each verified and recorded once."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from schemas.common import Channel
from services.common.event_store import ConcurrencyConflict
from services.gateway.channel_results import UnknownChannelTrade, record_channel_notification
from services.gateway.channels.bank import BankRailClient
from services.gateway.channels.base import ChannelAdapter, InvalidNotification
from services.gateway.payouts import record_payout_notification

log = structlog.get_logger(__name__)
router = APIRouter(tags=["callbacks"], include_in_schema=False)

NOTIFICATION_SIZE_MAX_BYTES = 16_384
RECORD_ATTEMPTS_MAX = 3


def _answer(adapter: ChannelAdapter, *, accepted: bool) -> Response:
    answer = adapter.notification_answer(accepted=accepted)
    return Response(answer.body, status_code=answer.status_code, media_type=answer.media_type)


@router.post("/v1/channels/{channel}/notify")
async def channel_notification(channel: str, request: Request) -> Response:
    """Verify a channel notification and record it once. Every rejection is logged with
    its reason and changes nothing; the channel retries what we do not acknowledge, in
    the channel's own words (each channel has its own acknowledgement)."""
    adapters = request.app.state.channels
    try:
        adapter: ChannelAdapter = adapters[Channel(channel)]
    except (ValueError, KeyError):
        log.warning("channel_notification_rejected", channel=channel, reason="unknown channel")
        return PlainTextResponse("unknown channel", status_code=404)
    body = await request.body()
    if len(body) > NOTIFICATION_SIZE_MAX_BYTES:
        log.warning("channel_notification_rejected", channel=channel, reason="too large")
        return _answer(adapter, accepted=False)
    context = request.app.state.context
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        notification = adapter.read_notification(body, headers, now=context.clock.now())
    except InvalidNotification as error:
        log.warning("channel_notification_rejected", channel=channel, reason=error.reason)
        return _answer(adapter, accepted=False)
    # A concurrent writer to the payment's stream (another notification, a refund result)
    # makes the record conflict; trying again with the new version is safe and cheap.
    for attempt in range(1, RECORD_ATTEMPTS_MAX + 1):
        try:
            async with context.pool.acquire() as connection, connection.transaction():
                recorded = await record_channel_notification(
                    connection, Channel(channel), notification, clock=context.clock
                )
            break
        except UnknownChannelTrade as error:
            log.warning("channel_notification_rejected", channel=channel, reason=str(error))
            return _answer(adapter, accepted=False)
        except ConcurrencyConflict:
            log.info("channel_notification_conflict", channel=channel, attempt=attempt)
    else:
        return _answer(adapter, accepted=False)
    if recorded:
        context.relay.wake()
    log.info(
        "channel_notification_recorded" if recorded else "channel_notification_not_recorded",
        channel=channel,
        notification=type(notification).__name__,
        notification_id=notification.notification_id,
    )
    return _answer(adapter, accepted=True)


@router.post("/v1/bank/notify")
async def bank_notification(request: Request) -> Response:
    """Verify a bank rail notification and record the payout's result once. Anything not
    acknowledged with a 2xx is sent again by the rail."""
    rail: BankRailClient = request.app.state.bank_rail
    body = await request.body()
    if len(body) > NOTIFICATION_SIZE_MAX_BYTES:
        log.warning("bank_notification_rejected", reason="too large")
        return Response("too large", status_code=413)
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        result = rail.read_notification(body, headers)
    except InvalidNotification as error:
        log.warning("bank_notification_rejected", reason=error.reason)
        return Response(error.reason, status_code=400)
    context = request.app.state.context
    for attempt in range(1, RECORD_ATTEMPTS_MAX + 1):
        try:
            async with context.pool.acquire() as connection, connection.transaction():
                recorded = await record_payout_notification(connection, result, clock=context.clock)
            break
        except LookupError as error:
            log.warning("bank_notification_rejected", reason=str(error))
            return Response("unknown payout", status_code=404)
        except ConcurrencyConflict:
            log.info("bank_notification_conflict", payout_id=result.payout_id, attempt=attempt)
    else:
        return Response("conflict", status_code=409)
    if recorded:
        context.relay.wake()
    log.info(
        "bank_notification_recorded" if recorded else "bank_notification_repeated",
        payout_id=result.payout_id,
        paid=result.paid,
    )
    return Response(status_code=204)
