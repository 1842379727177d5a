"""`make bench`: end-to-end payment throughput and latency, next to the raw broker rate.

One run starts the whole platform with the same launcher as `make run` (embedded broker;
DATABASE_URL or an embedded PostgreSQL), then measures:

1. end to end: payments per second and p50/p95/p99 latency from `POST /v1/payments` to the
   signed `payment.succeeded` webhook arriving at the merchant's receiver, with a fixed
   number of payers in parallel (each payment: create, pay at the simulator, webhook),
   and under that load risk's decision latency (p50/p99) from each payment's creation to
   its risk decision;
2. the raw broker produce and consume rate of event-sized records on the same machine;
3. the ledger's projection rate: synthetic payment events replayed from a fresh topic
   through the ledger's live consumer path (inbox + `post_event`, one transaction per
   event) into a scratch schema, next to a raw COPY of the journal rows it produced, and
   their ratio (bench/ledger_projection.py);
4. the notifier's webhook delivery rate to a local receiver, alone, next to an endpoint
   that never answers, and next to 10,000 idle endpoints of other merchants
   (bench/webhook_delivery.py).

It prints a table and writes JSON to bench/results/. Counts and time are bounded; every
request targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host_platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.ledger_projection import (
    EVENT_COUNT_DEFAULT,
    EVENT_COUNT_MAX,
    PROJECTION_TIMEOUT_S_DEFAULT,
    ledger_logging,
    measure_ledger_projection,
    table_rows,
)
from bench.webhook_delivery import (
    DELIVERY_COUNT_DEFAULT,
    DELIVERY_COUNT_MAX,
    measure_webhook_delivery,
)
from bench.webhook_delivery import table_rows as webhook_table_rows
from services.common.infrastructure import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
from services.common.launcher import LauncherSettings, Platform, PlatformInfo
from services.common.settings import ServiceSettings

RESULTS_DIR = Path(__file__).parent / "results"
RECORD_BYTES = 700  # about the size of a payment event envelope
PAYABLE_WAIT_S_MAX = 30.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def _one_payment(client: httpx.AsyncClient, api_key: str, started: dict[str, float]) -> str:
    payment_started = time.time()
    answer = await client.post(
        "/v1/payments",
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": uuid.uuid4().hex},
        json={
            "amount": 1999,
            "currency": "CNY",
            "channel": "alipay",
            "order_id": f"bench-{uuid.uuid4().hex[:12]}",
            "description": "bench",
        },
    )
    answer.raise_for_status()
    payment = answer.json()
    started[payment["id"]] = payment_started
    # The create call waits only briefly for the channel; on a busy machine the answer can
    # still be `submitting`, so poll the payment (bounded) until it is payable.
    deadline = time.monotonic() + PAYABLE_WAIT_S_MAX
    while payment["status"] == "submitting" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        polled = await client.get(
            f"/v1/payments/{payment['id']}", headers={"Authorization": f"Bearer {api_key}"}
        )
        polled.raise_for_status()
        payment = polled.json()
    if payment["status"] != "requires_payment":
        raise RuntimeError(f"payment not payable: {payment}")
    paid = await client.post(payment["next_action"]["url"])
    paid.raise_for_status()
    payment_id: str = payment["id"]
    return payment_id


def _delivered(log_path: Path) -> dict[str, float]:
    delivered: dict[str, float] = {}
    if not log_path.exists():
        return delivered
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if record["verified"] and record["type"] == "payment.succeeded":
            delivered.setdefault(record["event"]["data"]["object"]["id"], record["received_at"])
    return delivered


async def measure_end_to_end(
    info: PlatformInfo, payment_count: int, concurrency: int, timeout_s: float
) -> dict[str, Any]:
    assert info.demo_api_key is not None and info.demo_webhook_log is not None
    started: dict[str, float] = {}
    limiter = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=info.api_base_url, timeout=30.0) as client:

        async def bounded() -> str:
            async with limiter:
                return await _one_payment(client, info.demo_api_key or "", started)

        begin = time.time()
        payment_ids = await asyncio.gather(*(bounded() for _ in range(payment_count)))
    deadline = time.monotonic() + timeout_s
    delivered = _delivered(info.demo_webhook_log)
    while time.monotonic() < deadline and not all(pid in delivered for pid in payment_ids):
        await asyncio.sleep(0.2)
        delivered = _delivered(info.demo_webhook_log)
    latencies_ms = [
        (delivered[pid] - started[pid]) * 1000 for pid in payment_ids if pid in delivered
    ]
    completed = len(latencies_ms)
    end = max((delivered[pid] for pid in payment_ids if pid in delivered), default=begin)
    return {
        "payments": payment_count,
        "completed": completed,
        "concurrency": concurrency,
        "wall_s": round(end - begin, 3),
        "payments_per_s": round(completed / (end - begin), 2) if end > begin else 0.0,
        "latency_ms_p50": round(percentile(latencies_ms, 0.50), 1) if latencies_ms else None,
        "latency_ms_p95": round(percentile(latencies_ms, 0.95), 1) if latencies_ms else None,
        "latency_ms_p99": round(percentile(latencies_ms, 0.99), 1) if latencies_ms else None,
        "latency_ms_max": round(max(latencies_ms), 1) if latencies_ms else None,
    }


async def measure_broker(bootstrap: str, record_count: int) -> dict[str, Any]:
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    value = b"x" * RECORD_BYTES
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        begin = time.perf_counter()
        futures = [
            await producer.send(topic, value=value, key=f"k{i % 1000}".encode())
            for i in range(record_count)
        ]
        await asyncio.gather(*futures)
        produce_s = time.perf_counter() - begin
    finally:
        await producer.stop()
    # Assigned partitions, not a consumer group: the figure is the fetch rate, not the
    # time a group takes to form.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, number) for number in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        received = 0
        begin = time.perf_counter()
        deadline = time.monotonic() + 120
        while received < record_count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            received += sum(len(records) for records in batch.values())
        consume_s = time.perf_counter() - begin
    finally:
        await consumer.stop()
    return {
        "records": record_count,
        "record_bytes": RECORD_BYTES,
        "produce_records_per_s": round(record_count / produce_s, 1),
        "consume_records_per_s": round(received / consume_s, 1) if consume_s > 0 else None,
        "consumed": received,
    }


# How long risk took to decide each payment of the run: from the moment payment_center
# recorded PaymentCreated (the observation's time) to the commit of the risk decision,
# through the outbox, the broker and the risk consumer.
_RISK_LATENCIES = """
SELECT extract(epoch FROM (e.recorded_at - o.observed_at)) * 1000 AS latency_ms
FROM risk.event_store e
JOIN risk.payment_observations o ON o.payment_id = e.stream_id
WHERE e.message_type = 'RiskDecisionMade' AND e.stream_version = 1
  AND o.observed_at >= $1
"""


async def measure_risk_latency(database_url: str, since: datetime) -> dict[str, Any]:
    """p50/p99 of risk decision latency for the payments created since `since`."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(_RISK_LATENCIES, since)
    finally:
        await connection.close()
    latencies = [float(row["latency_ms"]) for row in rows]
    if not latencies:
        return {"decisions": 0, "latency_ms_p50": None, "latency_ms_p99": None}
    return {
        "decisions": len(latencies),
        "latency_ms_p50": round(percentile(latencies, 0.50), 1),
        "latency_ms_p99": round(percentile(latencies, 0.99), 1),
    }


def _table(results: dict[str, Any]) -> str:
    e2e, raw, risk = results["end_to_end"], results["broker_raw"], results["risk"]
    rows = [
        ("end-to-end payments/s (create -> webhook)", e2e["payments_per_s"]),
        ("end-to-end latency p50 ms", e2e["latency_ms_p50"]),
        ("end-to-end latency p95 ms", e2e["latency_ms_p95"]),
        ("end-to-end latency p99 ms", e2e["latency_ms_p99"]),
        (
            "payments completed",
            f"{e2e['completed']}/{e2e['payments']} at concurrency {e2e['concurrency']}",
        ),
        ("risk decision latency p50 ms (created -> decided)", risk["latency_ms_p50"]),
        ("risk decision latency p99 ms", risk["latency_ms_p99"]),
        ("raw broker produce records/s", raw["produce_records_per_s"]),
        ("raw broker consume records/s", raw["consume_records_per_s"]),
        *table_rows(results["ledger_projection"]),
        *webhook_table_rows(results["webhook_delivery"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _projection_settings(info: PlatformInfo) -> ServiceSettings:
    """Settings of the platform's broker and database, as the launcher gives its services."""
    overrides: dict[str, object] = {
        "kafka_bootstrap_servers": info.kafka_bootstrap_servers,
        "database_url": info.database_url,
        "kafka_topic_prefix": "bench.",
    }
    # The launcher shortens the fetch wait when it started the embedded broker.
    embedded_broker = not os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if embedded_broker and "PAYRAIL_KAFKA_FETCH_MAX_WAIT_MS" not in os.environ:
        overrides["kafka_fetch_max_wait_ms"] = EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
    return ServiceSettings(**overrides)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--broker-records", type=int, default=20_000)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument(
        "--ledger-events",
        type=int,
        default=EVENT_COUNT_DEFAULT,
        help=f"events the ledger projects (1 to {EVENT_COUNT_MAX})",
    )
    parser.add_argument(
        "--webhook-deliveries",
        type=int,
        default=DELIVERY_COUNT_DEFAULT,
        help=f"webhooks the delivery benchmark sends (1 to {DELIVERY_COUNT_MAX})",
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.webhook_deliveries <= DELIVERY_COUNT_MAX:
        parser.error(f"--webhook-deliveries must be between 1 and {DELIVERY_COUNT_MAX}")
    if not 1 <= arguments.ledger_events <= EVENT_COUNT_MAX:
        parser.error(f"--ledger-events must be between 1 and {EVENT_COUNT_MAX}")
    state_dir = Path(tempfile.mkdtemp(prefix="payrail-bench-"))
    launcher = LauncherSettings.on_free_ports(state_dir)
    print("Starting the platform for the benchmark...", flush=True)
    with Platform(launcher, ServiceSettings(kafka_topic_prefix="bench.")) as running:
        info = running.start()
        # Warm up connections and consumer groups before measuring.
        asyncio.run(measure_end_to_end(info, 5, 5, arguments.timeout_s))
        measured_from = datetime.now(UTC)
        end_to_end = asyncio.run(
            measure_end_to_end(info, arguments.payments, arguments.concurrency, arguments.timeout_s)
        )
        risk = asyncio.run(measure_risk_latency(info.database_url, measured_from))
        broker_raw = asyncio.run(
            measure_broker(info.kafka_bootstrap_servers, arguments.broker_records)
        )
        print(f"Projecting {arguments.ledger_events} events through the ledger...", flush=True)
        with ledger_logging(state_dir / "logs" / "bench_ledger_projection.log"):
            ledger_projection = asyncio.run(
                measure_ledger_projection(
                    _projection_settings(info),
                    arguments.ledger_events,
                    timeout_s=PROJECTION_TIMEOUT_S_DEFAULT,
                )
            )
        print(f"Delivering {arguments.webhook_deliveries} webhooks...", flush=True)
        with ledger_logging(state_dir / "logs" / "bench_webhook_delivery.log", "notifier"):
            webhook_delivery = asyncio.run(
                measure_webhook_delivery(info.database_url, arguments.webhook_deliveries)
            )
    results = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": host_platform.python_version()},
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded pgserver",
        "end_to_end": end_to_end,
        "risk": risk,
        "broker_raw": broker_raw,
        "ledger_projection": ledger_projection,
        "webhook_delivery": webhook_delivery,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "latest.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
