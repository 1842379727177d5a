"""The skeleton every service process shares: one FastAPI app whose lifespan owns the
database pool, the Kafka broker with its subscribers, the outbox relay and any
background workers. Nothing connects at import time; everything starts in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
import uvicorn
from fastapi import FastAPI, Request, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas import Message, Topic
from services.common.broker import (
    DeadLetterPublisher,
    KafkaRecordPublisher,
    build_broker,
    ensure_topics,
)
from services.common.clock import Clock, SystemClock
from services.common.consumer import (
    BatchApplier,
    BatchHandler,
    Handler,
    LockKeys,
    PartitionedConsumer,
    RetryPolicy,
    Subscription,
    subscription_topics,
)
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.dead_letters import DeadLetterSink
from services.common.logging import configure_logging
from services.common.metrics import HTTP_REQUEST_SECONDS
from services.common.outbox import KafkaClusterIdentity, OutboxRelay
from services.common.settings import ServiceSettings
from services.common.supervision import LoopSupervisor, SupervisionPolicy

log = structlog.get_logger(__name__)

RUNTIME_MIGRATIONS = "services.common.migrations"


@dataclass
class ServiceContext:
    """What a service's wiring function receives: its started-to-be dependencies."""

    name: str
    settings: ServiceSettings
    pool: asyncpg.Pool
    broker: KafkaBroker
    clock: Clock
    relay: OutboxRelay
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    # Called with the messages of every batch the consumer applied, after its commit
    # (waking requests that wait for a projection, say). Must not block.
    after_batch: list[Callable[[Sequence[Message]], None]] = field(default_factory=list)
    # Built from the settings rather than passed in, so that every context has one and the
    # constructor keeps its signature; the lifespan starts `background` under it, and
    # wiring may start further loops with `supervisor.start(name, work)` once running.
    supervisor: LoopSupervisor = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = LoopSupervisor(self.name, SupervisionPolicy.from_settings(self.settings))

    def consume(
        self,
        topic: Topic,
        handlers: Mapping[type[Message], Handler],
        *,
        batch_handler: BatchHandler | None = None,
        lock_keys: LockKeys | None = None,
    ) -> Subscription:
        """Have this service's consumer read `topic` through its idempotent inbox.

        Every topic of a service is read by one consumer group, `payrail.<service>`;
        the inbox keeps one name per topic (`<service>:<topic>`).
        """
        if any(existing.topic is topic for existing in self.subscriptions):
            raise ValueError(f"{self.name} already consumes {topic.value}")
        subscription = Subscription(
            topic,
            f"{self.name}:{topic.value}",
            handlers,
            batch_handler=batch_handler,
            lock_keys=lock_keys,
            # Merchant profiles govern how the other messages are handled.
            reference=topic is Topic.MERCHANTS_EVENTS,
        )
        self.subscriptions.append(subscription)
        return subscription

    def _after_batch(self, applied: Sequence[Message]) -> None:
        # A batch that applied anything may have written to the outbox: the relay of this
        # process publishes at once instead of at its next poll.
        self.relay.wake()
        for hook in self.after_batch:
            hook(applied)

    def consumer_loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The loops that run this service's consumer and redrive its dead letters (none
        when it consumes nothing).

        Each run of the consumer loop builds a fresh Kafka consumer, so a restarted loop
        rejoins the group and resumes from the committed offsets.
        """
        if not self.subscriptions:
            return []
        settings = self.settings
        by_topic = subscription_topics(self.subscriptions, settings.kafka_topic_prefix)
        group_id = f"{settings.kafka_topic_prefix}payrail.{self.name}"
        applier = BatchApplier(
            group=group_id,
            pool=self.pool,
            subscriptions=by_topic,
            dead_letters=DeadLetterSink(
                self.pool,
                service=self.name,
                clock=self.clock,
                copier=DeadLetterPublisher(self.broker, settings.kafka_topic_prefix).copy,
            ),
            retry=RetryPolicy.from_settings(settings),
            on_commit=self._after_batch,
        )

        async def consume_messages() -> None:
            consumer = PartitionedConsumer.from_settings(
                settings, group_id=group_id, client_id=f"payrail-{self.name}", applier=applier
            )
            await consumer.start()
            try:
                await consumer.run()
            finally:
                await consumer.stop()

        async def redrive_dead_letters() -> None:
            # Transient errors end the round; the supervisor starts it again.
            while True:
                await applier.redrive_requested()
                await asyncio.sleep(settings.dead_letter_redrive_poll_interval_ms / 1000)

        return [consume_messages, redrive_dead_letters]


Wiring = Callable[[ServiceContext], Awaitable[None]]


def create_service_app(
    name: str,
    settings: ServiceSettings,
    *,
    migration_packages: Sequence[str] = (),
    wiring: Wiring | None = None,
    clock: Clock | None = None,
    app: FastAPI | None = None,
    schema: str | None = None,
) -> FastAPI:
    """Build the ASGI app of service `name`. Its PostgreSQL schema is `schema`, by default
    `name`; a second process of one service (the gateway's channel connector) shares the
    schema under its own name, consumer group and inbox names."""
    schema_name = schema or name
    configure_logging(name, settings.log_level, settings.log_format)
    service_clock = clock or SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(fastapi_app: FastAPI) -> AsyncIterator[None]:
        migrations = load_migrations(RUNTIME_MIGRATIONS, *migration_packages)
        await apply_migrations(settings.database_url, schema_name, migrations)
        await ensure_topics(settings)
        pool = await create_pool(
            settings.database_url,
            schema_name,
            size_max=settings.database_pool_size_max,
            command_timeout_s=settings.database_command_timeout_s,
        )
        broker = build_broker(settings, client_id=f"payrail-{name}")
        relay = OutboxRelay(
            pool,
            schema_name,
            KafkaRecordPublisher(broker),
            topic_prefix=settings.kafka_topic_prefix,
            batch_size_max=settings.outbox_batch_size_max,
            poll_interval_ms=settings.outbox_poll_interval_ms,
            broker_identity=KafkaClusterIdentity(
                settings.kafka_bootstrap_servers,
                request_timeout_ms=settings.kafka_request_timeout_ms,
            ),
        )
        context = ServiceContext(name, settings, pool, broker, service_clock, relay)
        fastapi_app.state.context = context
        if wiring is not None:
            await wiring(context)
        context.background[:0] = context.consumer_loops()
        await broker.start()
        # A loop that crashes is restarted with backoff rather than left dead while the
        # service keeps answering; /readyz reports a loop down for too long.
        context.supervisor.start("outbox_relay", relay.run)
        for work in context.background:
            context.supervisor.start(work.__name__, work)
        log.info("service_started", port=getattr(settings, "http_port", None))
        try:
            yield
        finally:
            await context.supervisor.stop()
            for stop in context.on_stop:
                await stop()
            await broker.stop()
            await pool.close()
            log.info("service_stopped")

    service_app = app or FastAPI(title=f"payrail {name}")
    service_app.router.lifespan_context = lifespan
    _add_operational_routes(service_app)
    return service_app


def _add_operational_routes(app: FastAPI) -> None:
    @app.middleware("http")
    async def measure_latency(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        HTTP_REQUEST_SECONDS.labels(
            request.method, getattr(route, "path", "unmatched"), str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, object]:
        context: ServiceContext = app.state.context
        down_loops = context.supervisor.down_for_too_long(time.monotonic())
        if down_loops:
            response.status_code = 503
            return {"status": "unavailable", "down_loops": down_loops}
        try:
            async with asyncio.timeout(2):
                await context.pool.fetchval("SELECT 1")
                await context.broker.ping(timeout=2)
        except Exception as error:
            response.status_code = 503
            return {"status": "unavailable", "error": repr(error)}
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run `app` until SIGINT/SIGTERM, then shut down gracefully."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
    )
    uvicorn.Server(config).run()
