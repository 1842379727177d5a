"""Wiring of the notifier process: the consumer, the delivery worker and the internal API.

The internal API is called by the gateway on a merchant's behalf and binds to 127.0.0.1
by default; it is not a public surface and does no authentication of its own.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas import Message, Topic
from schemas.payments import PaymentCreated, PaymentSucceeded
from schemas.refunds import RefundSucceeded
from services.common.clock import Clock
from services.common.consumer import Handler
from services.common.errors import TRANSIENT_ERRORS
from services.common.service import ServiceContext, create_service_app
from services.notifier.delivery import DeliveryDispatcher, refresh_queue_gauges
from services.notifier.delivery_log import (
    DELIVERY_LIST_LIMIT_MAX,
    Attempt,
    Delivery,
    EndpointDisabled,
    NoSubscribedEndpoint,
    UnknownEvent,
    list_deliveries,
    replay_events,
    resend_event,
)
from services.notifier.domain import (
    URL_LENGTH_MAX,
    WEBHOOK_EVENT_TYPES,
    DeliveryStatus,
    NotifierError,
    check_subscription,
)
from services.notifier.egress import webhook_client
from services.notifier.handlers import (
    UnknownEndpoint,
    WebhookEndpoint,
    check_sendable_url,
    create_endpoint,
    delete_endpoint,
    enqueue_deliveries,
    ensure_ops_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from services.notifier.payer_notices import (
    NoticeEvent,
    load_sender,
    queue_payer_notice,
    remember_payer,
    run_notice_worker,
)
from services.notifier.settings import NotifierSettings

log = structlog.get_logger(__name__)

SERVICE_NAME = "notifier"
PROBLEM_CONTENT_TYPE = "application/problem+json"

# Notices sent at once by the payer notice worker.
PAYER_NOTICE_BATCH_SIZE = 32

MerchantId = Annotated[str, Field(min_length=1, max_length=128)]


# ---------------------------------------------------------------------------------------
# HTTP shapes


class CreateWebhookEndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_id: MerchantId
    url: str = Field(min_length=1, max_length=URL_LENGTH_MAX)
    events: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=32
    )


class UpdateWebhookEndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_id: MerchantId
    url: str | None = Field(default=None, min_length=1, max_length=URL_LENGTH_MAX)
    events: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=32
    )
    enabled: bool | None = None


class RotateSecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_id: MerchantId
    overlap_seconds: int = Field(
        default=86_400,
        ge=0,
        le=7 * 86_400,
        description="How long the old secret keeps signing next to the new one.",
    )


class WebhookEndpointResponse(BaseModel):
    id: str
    merchant_id: str
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None = Field(description="When the endpoint was last disabled.")
    disabled_reason: str | None = Field(
        description="Why payrail disabled it (every attempt failing); null when the merchant "
        "disabled it or it is enabled."
    )

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookEndpointResponse:
        return cls(
            id=endpoint.endpoint_id,
            merchant_id=endpoint.merchant_id,
            url=endpoint.url,
            events=list(endpoint.events),
            enabled=endpoint.enabled,
            created_at=endpoint.created_at,
            disabled_at=endpoint.disabled_at,
            disabled_reason=endpoint.disabled_reason,
        )


class CreatedWebhookEndpointResponse(WebhookEndpointResponse):
    secret: str = Field(description="Signing secret; returned only when the endpoint is created.")


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpointResponse]


class AttemptResponse(BaseModel):
    attempt_number: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptResponse:
        return cls(
            attempt_number=attempt.attempt_number,
            attempted_at=attempt.attempted_at,
            succeeded=attempt.succeeded,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
            response_excerpt=attempt.response_excerpt,
        )


class DeliveryResponse(BaseModel):
    id: str
    endpoint_id: str
    merchant_id: str
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    origin: str = Field(description="event (its first delivery), resend or replay.")
    attempts: list[AttemptResponse]

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryResponse:
        return cls(
            id=delivery.delivery_id,
            endpoint_id=delivery.endpoint_id,
            merchant_id=delivery.merchant_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempt_count=delivery.attempt_count,
            next_attempt_at=delivery.next_attempt_at,
            created_at=delivery.created_at,
            delivered_at=delivery.delivered_at,
            origin=delivery.origin,
            attempts=[AttemptResponse.of(attempt) for attempt in delivery.attempts],
        )


class DeliveryList(BaseModel):
    data: list[DeliveryResponse]
    has_more: bool


class ResendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_id: MerchantId
    endpoint_id: str | None = Field(default=None, min_length=1, max_length=128)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    merchant_id: MerchantId
    start: AwareDatetime = Field(alias="from", description="First instant of the range.")
    end: AwareDatetime = Field(alias="to", description="End of the range, excluded.")


class QueuedDeliveries(BaseModel):
    queued: int = Field(description="Deliveries queued, each due now.")


def problem(status: int, title: str, detail: str, code: str) -> JSONResponse:
    """An RFC 9457 problem document with payrail's stable `code` extension."""
    return JSONResponse(
        status_code=status,
        content={
            "type": f"https://payrail.dev/problems/{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        },
        media_type=PROBLEM_CONTENT_TYPE,
    )


# ---------------------------------------------------------------------------------------
# Routes


def _context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


def _add_internal_routes(app: FastAPI) -> None:
    @app.exception_handler(NotifierError)
    async def on_notifier_error(_request: Request, error: Exception) -> JSONResponse:
        code = error.code if isinstance(error, NotifierError) else "invalid_request"
        if isinstance(error, UnknownEndpoint | UnknownEvent):
            return problem(404, "Not found", str(error), code)
        if isinstance(error, EndpointDisabled | NoSubscribedEndpoint):
            return problem(409, "Conflict", str(error), code)
        return problem(422, "Invalid request", str(error), code)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, error: Exception) -> JSONResponse:
        errors = error.errors() if isinstance(error, RequestValidationError) else []
        detail = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in errors
        )
        return problem(422, "Invalid request", detail or "invalid request", "invalid_request")

    @app.post("/internal/v1/webhook_endpoints", status_code=201)
    async def post_webhook_endpoint(
        request: Request, body: CreateWebhookEndpointRequest
    ) -> CreatedWebhookEndpointResponse:
        # Bad input is refused before any dependency is touched.
        settings: NotifierSettings = request.app.state.notifier_settings
        allowed_hosts = frozenset(settings.webhook_allowed_hosts)
        check_sendable_url(body.url, allowed_hosts)
        check_subscription(body.events)
        context = _context(request)
        created = await create_endpoint(
            context.pool,
            merchant_id=body.merchant_id,
            url=body.url,
            events=body.events,
            clock=context.clock,
            allowed_hosts=allowed_hosts,
        )
        return CreatedWebhookEndpointResponse(
            **WebhookEndpointResponse.of(created.endpoint).model_dump(), secret=created.secret
        )

    @app.get("/internal/v1/webhook_endpoints")
    async def get_webhook_endpoints(
        request: Request, merchant_id: Annotated[str, Query(min_length=1, max_length=128)]
    ) -> WebhookEndpointList:
        endpoints = await list_endpoints(_context(request).pool, merchant_id)
        return WebhookEndpointList(data=[WebhookEndpointResponse.of(e) for e in endpoints])

    @app.patch("/internal/v1/webhook_endpoints/{endpoint_id}")
    async def patch_webhook_endpoint(
        request: Request, endpoint_id: str, body: UpdateWebhookEndpointRequest
    ) -> WebhookEndpointResponse:
        settings: NotifierSettings = request.app.state.notifier_settings
        endpoint = await update_endpoint(
            _context(request).pool,
            endpoint_id=endpoint_id,
            merchant_id=body.merchant_id,
            url=body.url,
            events=body.events,
            enabled=body.enabled,
            clock=_context(request).clock,
            allowed_hosts=frozenset(settings.webhook_allowed_hosts),
        )
        return WebhookEndpointResponse.of(endpoint)

    @app.delete("/internal/v1/webhook_endpoints/{endpoint_id}", status_code=204)
    async def delete_webhook_endpoint(
        request: Request,
        endpoint_id: str,
        merchant_id: Annotated[str, Query(min_length=1, max_length=128)],
    ) -> Response:
        context = _context(request)
        await delete_endpoint(
            context.pool, endpoint_id=endpoint_id, merchant_id=merchant_id, clock=context.clock
        )
        return Response(status_code=204)

    @app.post("/internal/v1/webhook_endpoints/{endpoint_id}/rotate_secret")
    async def rotate_webhook_secret(
        request: Request, endpoint_id: str, body: RotateSecretRequest
    ) -> CreatedWebhookEndpointResponse:
        context = _context(request)
        rotated = await rotate_secret(
            context.pool,
            endpoint_id=endpoint_id,
            merchant_id=body.merchant_id,
            overlap_seconds=body.overlap_seconds,
            clock=context.clock,
        )
        return CreatedWebhookEndpointResponse(
            **WebhookEndpointResponse.of(rotated.endpoint).model_dump(), secret=rotated.secret
        )

    @app.get("/internal/v1/deliveries")
    async def get_deliveries(
        request: Request,
        merchant_id: Annotated[str, Query(min_length=1, max_length=128)],
        event_id: uuid.UUID | None = None,
        endpoint_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        starting_after: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=DELIVERY_LIST_LIMIT_MAX)] = DELIVERY_LIST_LIMIT_MAX,
    ) -> DeliveryList:
        # One more than asked tells whether another page follows.
        deliveries = await list_deliveries(
            _context(request).pool,
            merchant_id=merchant_id,
            event_id=event_id,
            endpoint_id=endpoint_id,
            starting_after=starting_after,
            limit=limit + 1,
        )
        return DeliveryList(
            data=[DeliveryResponse.of(delivery) for delivery in deliveries[:limit]],
            has_more=len(deliveries) > limit,
        )

    @app.post("/internal/v1/events/{event_id}/resend", status_code=202)
    async def post_resend(
        request: Request, event_id: uuid.UUID, body: ResendRequest
    ) -> QueuedDeliveries:
        context = _context(request)
        queued = await resend_event(
            context.pool,
            merchant_id=body.merchant_id,
            event_id=event_id,
            endpoint_id=body.endpoint_id,
            clock=context.clock,
        )
        request.app.state.wake_deliveries()
        return QueuedDeliveries(queued=queued)

    @app.post("/internal/v1/webhook_endpoints/{endpoint_id}/replay", status_code=202)
    async def post_replay(
        request: Request, endpoint_id: str, body: ReplayRequest
    ) -> QueuedDeliveries:
        context = _context(request)
        queued = await replay_events(
            context.pool,
            merchant_id=body.merchant_id,
            endpoint_id=endpoint_id,
            start=body.start,
            end=body.end,
            clock=context.clock,
        )
        request.app.state.wake_deliveries()
        return QueuedDeliveries(queued=queued)


# ---------------------------------------------------------------------------------------
# Process wiring


def _queue_gauges(
    context: ServiceContext, settings: NotifierSettings
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def measure_webhook_queue() -> None:
        while True:
            try:
                await refresh_queue_gauges(context.pool, context.clock)
            except TRANSIENT_ERRORS as error:
                log.warning("webhook_queue_gauges_failed", error=repr(error))
            await asyncio.sleep(settings.queue_gauges_interval_ms / 1000)

    return measure_webhook_queue


def _event_handlers(
    settings: NotifierSettings, clock: Clock
) -> dict[Topic, dict[type[Message], Handler]]:
    """What the notifier does with each event, by topic: every public event is a webhook
    (payments and refunds on payments.events, payouts on ledger.events, and to the ops
    webhook risk alerts on risk.decisions and dead letters on operations.events); a
    payment's payer is remembered from PaymentCreated, and PaymentSucceeded and
    RefundSucceeded also queue a payer notice."""
    enqueue = functools.partial(
        enqueue_deliveries,
        clock=clock,
        first_attempt_delay_ms=settings.webhook_retry_schedule_ms[0],
    )
    queue_notice = functools.partial(
        queue_payer_notice,
        clock=clock,
        first_attempt_delay_ms=settings.payer_notice_retry_schedule_ms[0],
    )

    async def enqueue_and_notify(connection: asyncpg.Connection, event: NoticeEvent) -> None:
        await enqueue(connection, event)
        await queue_notice(connection, event)

    handlers: dict[Topic, dict[type[Message], Handler]] = {}
    for cls in WEBHOOK_EVENT_TYPES:
        handlers.setdefault(cls.topic, {})[cls] = enqueue
    for notice_cls in (PaymentSucceeded, RefundSucceeded):
        handlers[notice_cls.topic][notice_cls] = enqueue_and_notify
    handlers[PaymentCreated.topic][PaymentCreated] = remember_payer
    return handlers


def _wiring(
    settings: NotifierSettings, app: FastAPI
) -> Callable[[ServiceContext], Coroutine[Any, Any, None]]:
    async def wire(context: ServiceContext) -> None:
        # A sender that cannot be loaded stops the start, before anything is consumed.
        sender = load_sender(settings.payer_notice_sender)
        for topic, handlers in sorted(_event_handlers(settings, context.clock).items()):
            context.consume(topic, handlers)
        if settings.ops_webhook_url:
            await ensure_ops_endpoint(
                context.pool,
                url=settings.ops_webhook_url,
                secret=settings.ops_webhook_secret.get_secret_value(),
                clock=context.clock,
                allowed_hosts=frozenset(settings.webhook_allowed_hosts),
            )
        http_client = webhook_client(settings)
        context.on_stop.append(http_client.aclose)
        dispatcher = DeliveryDispatcher(context.pool, http_client, settings, context.clock)
        # Deliveries this process queued are claimed at once; other processes' by the poll.
        context.after_batch.append(lambda _applied: dispatcher.wake())
        app.state.wake_deliveries = dispatcher.wake

        async def deliver_webhooks() -> None:
            await dispatcher.run()

        async def send_payer_notices() -> None:
            await run_notice_worker(
                context.pool,
                sender,
                clock=context.clock,
                schedule=settings.payer_notice_retry_schedule_ms,
                timeout_ms=settings.payer_notice_timeout_ms,
                batch_size=PAYER_NOTICE_BATCH_SIZE,
                poll_interval_ms=settings.payer_notice_poll_interval_ms,
            )

        context.background.append(deliver_webhooks)
        context.background.append(send_payer_notices)
        context.background.append(_queue_gauges(context, settings))

    return wire


def create_app(settings: NotifierSettings | None = None, clock: Clock | None = None) -> FastAPI:
    """Build the notifier's ASGI app. Nothing connects until its lifespan starts."""
    notifier_settings = settings or NotifierSettings()
    app = FastAPI(title="payrail notifier (internal)")
    app.state.notifier_settings = notifier_settings
    _add_internal_routes(app)
    return create_service_app(
        SERVICE_NAME,
        notifier_settings,
        migration_packages=["services.notifier.migrations"],
        wiring=_wiring(notifier_settings, app),
        clock=clock,
        app=app,
    )
