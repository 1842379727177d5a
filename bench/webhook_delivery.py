"""Webhook delivery rate of the notifier's worker, alone and next to a hanging endpoint.

`make bench` calls `measure_webhook_delivery`; `python -m bench.webhook_delivery
--deliveries 1000` runs it alone (DATABASE_URL, else PostgreSQL on 127.0.0.1:5432).

A scratch schema is migrated like the notifier's. ENDPOINT_COUNT merchants each get one
endpoint on a local receiver (a threaded HTTP server on 127.0.0.1 that answers 200 at
once, in this process, so it shares the machine's cores with the worker), and N events
are queued round-robin across them by `enqueue_deliveries`, as the consumer queues them.
Then `DeliveryDispatcher.run` (the worker the notifier runs) delivers them; the rate is
deliveries divided by the time from its start until every delivery is recorded succeeded.

The second run adds one endpoint that never answers (each attempt ends at the webhook
timeout) with HANGING_DELIVERIES queued before the others: it may hold at most
`webhook_endpoint_concurrency_max` slots, so the healthy endpoints' rate should stay close
to the first run's. The third run registers IDLE_ENDPOINT_COUNT_DEFAULT more endpoints of
other merchants with nothing to deliver, as a marketplace has: a claim visits only
endpoints with work waiting, so the rate should stay close to the first run's too. Every
figure and the ratios are reported; each run's schema is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg

from bench.part_logging import service_logging
from schemas import new_event
from schemas.common import Channel, FeePlan
from schemas.payments import PaymentSucceeded, PaymentSucceededPayload
from services.common.clock import SystemClock
from services.common.db import apply_migrations, create_pool, load_migrations
from services.common.service import RUNTIME_MIGRATIONS
from services.notifier.delivery import DeliveryDispatcher
from services.notifier.egress import webhook_client
from services.notifier.handlers import create_endpoint, enqueue_deliveries
from services.notifier.settings import NotifierSettings

DELIVERY_COUNT_DEFAULT = 2_000
DELIVERY_COUNT_MAX = 100_000
ENDPOINT_COUNT = 20
HANGING_DELIVERIES = 200
HANGING_TIMEOUT_MS = 2_000
IDLE_ENDPOINT_COUNT_DEFAULT = 10_000
IDLE_ENDPOINT_COUNT_MAX = 100_000
ENQUEUE_BATCH = 100
DEADLINE_S = 600.0
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def local_receiver() -> Iterator[tuple[str, threading.Event]]:
    """A receiver answering 200 on every path except `/hang`, which holds each request
    until the returned event is set. Yields its base URL and that event."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/hang":
                release.wait(60)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}", release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def _event(merchant_id: str) -> PaymentSucceeded:
    now = datetime.now(UTC)
    payment_id = f"pay_{uuid.uuid4().hex}"
    return new_event(
        PaymentSucceeded,
        PaymentSucceededPayload(
            order_id=f"order-{uuid.uuid4().hex[:8]}",
            amount_minor=1_999,
            currency="CNY",
            channel=Channel.ALIPAY,
            fee_plan=FeePlan(basis_points=60, fixed_minor=0),
            channel_trade_id=f"trade-{uuid.uuid4().hex[:8]}",
            paid_at=now,
        ),
        aggregate_id=payment_id,
        aggregate_version=3,
        merchant_id=merchant_id,
        producer="bench",
        occurred_at=now,
        correlation_id=payment_id,
        causation_id=None,
    )


@contextlib.asynccontextmanager
async def scratch_notifier(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    schema = f"bench_notifier_{uuid.uuid4().hex[:8]}"
    await apply_migrations(
        database_url, schema, load_migrations(RUNTIME_MIGRATIONS, "services.notifier.migrations")
    )
    pool = await create_pool(database_url, schema)
    try:
        yield pool, schema
    finally:
        await pool.close()
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await connection.close()


async def _queue(pool: asyncpg.Pool, merchants: list[str], count: int) -> None:
    clock = SystemClock()
    for start in range(0, count, ENQUEUE_BATCH):
        async with pool.acquire() as connection, connection.transaction():
            for index in range(start, min(start + ENQUEUE_BATCH, count)):
                await enqueue_deliveries(
                    connection, _event(merchants[index % len(merchants)]), clock=clock
                )


async def _deliver_all(
    pool: asyncpg.Pool,
    schema: str,
    settings: NotifierSettings,
    merchants: list[str],
    count: int,
) -> float:
    """Run the worker until `count` deliveries of `merchants` succeeded; seconds taken."""
    async with webhook_client(settings) as http_client:
        dispatcher = DeliveryDispatcher(pool, http_client, settings, SystemClock(), schema=schema)
        started = time.perf_counter()
        worker = asyncio.create_task(dispatcher.run())
        try:
            deadline = started + DEADLINE_S
            while True:
                done = await pool.fetchval(
                    "SELECT count(*) FROM webhook_deliveries"
                    " WHERE status = 'succeeded' AND merchant_id = ANY($1::text[])",
                    merchants,
                )
                if done >= count:
                    return time.perf_counter() - started
                if worker.done():
                    worker.result()
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{done} of {count} webhooks delivered in {DEADLINE_S}s")
                await asyncio.sleep(0.02)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


async def _register_idle_endpoints(pool: asyncpg.Pool, count: int) -> None:
    """`count` enabled endpoints of other merchants, written in one statement (through
    `create_endpoint` they would take most of the run) with the columns it sets."""
    await pool.execute(
        "INSERT INTO webhook_endpoints (endpoint_id, merchant_id, url, events, secret,"
        " enabled, created_at)"
        " SELECT 'we_idle_' || n, 'm_idle_' || n, 'https://hooks.idle.example/' || n,"
        " ARRAY['*'], 'whsec_idle_' || n, true, now() FROM generate_series(1, $1) AS n",
        count,
    )


async def measure_webhook_delivery(
    database_url: str, deliveries: int, idle_endpoints: int = IDLE_ENDPOINT_COUNT_DEFAULT
) -> dict[str, Any]:
    if not 1 <= deliveries <= DELIVERY_COUNT_MAX:
        raise ValueError(f"deliveries must be between 1 and {DELIVERY_COUNT_MAX}")
    if not 1 <= idle_endpoints <= IDLE_ENDPOINT_COUNT_MAX:
        raise ValueError(f"idle_endpoints must be between 1 and {IDLE_ENDPOINT_COUNT_MAX}")
    results: dict[str, Any] = {
        "deliveries": deliveries,
        "endpoints": ENDPOINT_COUNT,
        "idle_endpoints": idle_endpoints,
    }
    scenarios = (
        ("healthy", False, 0),
        ("with_hanging_endpoint", True, 0),
        ("with_idle_endpoints", False, idle_endpoints),
    )
    with local_receiver() as (base_url, _release):
        for scenario, hanging, idle in scenarios:
            async with scratch_notifier(database_url) as (pool, schema):
                settings = NotifierSettings(
                    database_url=database_url,
                    webhook_allowed_hosts=["127.0.0.1"],
                    webhook_timeout_ms=HANGING_TIMEOUT_MS,
                )
                clock = SystemClock()
                merchants = [f"m_bench_{i}" for i in range(ENDPOINT_COUNT)]
                for merchant in merchants:
                    await create_endpoint(
                        pool,
                        merchant_id=merchant,
                        url=f"{base_url}/ok",
                        events=["*"],
                        clock=clock,
                        allowed_hosts=["127.0.0.1"],
                    )
                if hanging:
                    await create_endpoint(
                        pool,
                        merchant_id="m_bench_hanging",
                        url=f"{base_url}/hang",
                        events=["*"],
                        clock=clock,
                        allowed_hosts=["127.0.0.1"],
                    )
                    await _queue(pool, ["m_bench_hanging"], HANGING_DELIVERIES)
                if idle:
                    await _register_idle_endpoints(pool, idle)
                await _queue(pool, merchants, deliveries)
                elapsed_s = await _deliver_all(pool, schema, settings, merchants, deliveries)
                results[scenario] = {
                    "elapsed_s": round(elapsed_s, 3),
                    "deliveries_per_s": round(deliveries / elapsed_s, 1),
                }
    results["hanging_endpoint_slots"] = NotifierSettings(
        database_url=database_url
    ).webhook_endpoint_concurrency_max
    for scenario in ("with_hanging_endpoint", "with_idle_endpoints"):
        results[f"ratio_{scenario.removeprefix('with_')}_to_healthy"] = round(
            results[scenario]["deliveries_per_s"] / results["healthy"]["deliveries_per_s"], 3
        )
    return results


def table_rows(results: dict[str, Any]) -> list[tuple[str, object]]:
    slots = results["hanging_endpoint_slots"]
    return [
        (
            f"webhook deliveries/s ({results['endpoints']} endpoints, local receiver)",
            results["healthy"]["deliveries_per_s"],
        ),
        (
            f"  same, next to a hanging endpoint (holds {slots} slots)",
            results["with_hanging_endpoint"]["deliveries_per_s"],
        ),
        (
            f"  same, next to {results['idle_endpoints']:,} idle endpoints of other merchants",
            results["with_idle_endpoints"]["deliveries_per_s"],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=DELIVERY_COUNT_DEFAULT)
    parser.add_argument("--idle-endpoints", type=int, default=IDLE_ENDPOINT_COUNT_DEFAULT)
    arguments = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    log_path = Path(tempfile.mkdtemp(prefix="payrail-bench-")) / "webhook_delivery.log"
    with service_logging(log_path, "notifier"):
        results = asyncio.run(
            measure_webhook_delivery(database_url, arguments.deliveries, arguments.idle_endpoints)
        )
    print(json.dumps(results, indent=2))
    print(f"log: {log_path}")


if __name__ == "__main__":
    main()
