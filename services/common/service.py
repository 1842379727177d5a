"""The skeleton every service process shares: one FastAPI app whose lifespan owns the
database pool, the Kafka broker with its subscribers, the outbox relay and any
background workers. Nothing connects at import time; everything starts in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
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
from services.common.consumer import Handler, InboxConsumer, subscribe
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.logging import configure_logging
from services.common.metrics import HTTP_REQUEST_SECONDS
from services.common.outbox import OutboxRelay
from services.common.settings import ServiceSettings

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

    def consume(self, topic: Topic, handlers: dict[type[Message], Handler]) -> InboxConsumer:
        """Subscribe this service's consumer group to `topic` with an idempotent inbox."""
        consumer = InboxConsumer(
            name=f"{self.name}:{topic.value}",
            topic=topic,
            pool=self.pool,
            handlers=handlers,
            dead_letters=DeadLetterPublisher(
                self.broker, self.settings.kafka_topic_prefix, f"{self.name}:{topic.value}"
            ),
            retry_count_max=self.settings.consumer_retry_count_max,
        )
        group_id = f"{self.settings.kafka_topic_prefix}payrail.{self.name}.{topic.value}"
        subscribe(self.broker, self.settings, consumer, group_id=group_id)
        return consumer


Wiring = Callable[[ServiceContext], Awaitable[None]]


async def _run_forever(name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # A background loop that dies takes the process down: a half-working service that
    # still answers /healthz is worse than one the supervisor restarts.
    try:
        await work()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background_task_crashed", task=name)
        raise


def create_service_app(
    name: str,
    settings: ServiceSettings,
    *,
    migration_packages: Sequence[str] = (),
    wiring: Wiring | None = None,
    clock: Clock | None = None,
    app: FastAPI | None = None,
) -> FastAPI:
    """Build the ASGI app of service `name` (also its PostgreSQL schema name)."""
    configure_logging(name, settings.log_level, settings.log_format)
    service_clock = clock or SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(fastapi_app: FastAPI) -> AsyncIterator[None]:
        migrations = load_migrations(RUNTIME_MIGRATIONS, *migration_packages)
        await apply_migrations(settings.database_url, name, migrations)
        await ensure_topics(settings)
        pool = await create_pool(
            settings.database_url,
            name,
            size_max=settings.database_pool_size_max,
            command_timeout_s=settings.database_command_timeout_s,
        )
        broker = build_broker(settings, client_id=f"payrail-{name}")
        relay = OutboxRelay(
            pool,
            name,
            KafkaRecordPublisher(broker),
            topic_prefix=settings.kafka_topic_prefix,
            batch_size_max=settings.outbox_batch_size_max,
            poll_interval_ms=settings.outbox_poll_interval_ms,
        )
        context = ServiceContext(name, settings, pool, broker, service_clock, relay)
        fastapi_app.state.context = context
        if wiring is not None:
            await wiring(context)
        await broker.start()
        tasks = [asyncio.create_task(_run_forever("outbox_relay", relay.run))]
        tasks += [
            asyncio.create_task(_run_forever(work.__name__, work)) for work in context.background
        ]
        log.info("service_started", port=getattr(settings, "http_port", None))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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
    async def readyz(response: Response) -> dict[str, str]:
        context: ServiceContext = app.state.context
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
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
    )
    uvicorn.Server(config).run()
