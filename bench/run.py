"""`make bench`: end-to-end payment throughput and latency, the platform's idle cost, and
its parts next to their floors and a peer.

One run starts the whole platform with the same launcher as `make run` (embedded broker;
DATABASE_URL or an embedded PostgreSQL), then measures, in this order:

1. idle CPU: every platform process (services, PSP simulator, embedded broker, and the
   embedded PostgreSQL when the launcher started it) left alone right after start-up,
   in percent of one core (bench/platform_processes.py);
2. end to end (bench/end_to_end.py), each payment being `POST /v1/payments`, pay at the
   simulator, and the signed `payment.succeeded` webhook at the merchant's receiver:
   a sweep of closed-loop points with a fixed number of payments in flight (the best
   is `e2e_payments_per_s`); a point at NO_COLLAPSE_FACTOR times the best point's count,
   to show that overload does not collapse throughput; and an open loop at a fixed
   offered rate, whose p50/p99 from each scheduled start are `e2e_p50_ms`/`e2e_p99_ms`;
   under that load, risk's decision latency from each payment's creation to its decision;
3. resident memory of every process after the load;
4. the raw broker produce and consume rate of event-sized records on the same machine;
5. the ledger's projection rate next to a raw COPY of the rows it wrote
   (bench/ledger_projection.py);
6. the notifier's webhook delivery rate (bench/webhook_delivery.py);
7. payrail's event store next to the `eventsourcing` library's, appending the same
   events in a scratch database on the platform's PostgreSQL server
   (bench/event_store_peer.py).

Risk's latency and parts 4 to 7 are measured even when one of them fails: a failure is
recorded in the results under that part's key, and the run exits with status 1 after
writing them.

It prints a table and writes JSON to bench/results/latest.json: first the headline keys
(`e2e_payments_per_s`, `e2e_sweep`, `no_collapse`, `e2e_p50_ms`, `e2e_p99_ms`,
`ledger_replay_events_per_s`, `raw_copy_rows_per_s`, `ledger_replay_vs_copy_ratio`,
`idle_cpu_percent_of_core`, `rss_mb`, `peer_comparison`), then every part's details and
how long each phase took (`phase_s`). `--quick` runs every part with small counts and
short windows, as a smoke test of about two minutes. Counts and times are bounded; every
request targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform as host_platform
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import event_store_peer
from bench.end_to_end import (
    Target,
    WebhookTail,
    client_session,
    closed_loop_point,
    open_loop,
    percentile,
    settle,
    sweep,
)
from bench.part_logging import service_logging
from bench.platform_processes import measure_idle_cpu, platform_processes, resident_memory_mb
from services.common.infrastructure import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
from services.common.launcher import LauncherSettings, Platform, PlatformInfo
from services.common.settings import ServiceSettings

RESULTS_DIR = Path(__file__).parent / "results"
RECORD_BYTES = 700  # about the size of a payment event envelope
NO_COLLAPSE_FACTOR = 4
OVERLOAD_PAYMENT_TIMEOUT_S_MAX = 180.0
IN_FLIGHT_MAX = 2_048
WARMUP_PAYMENT_COUNT = 5
# The webhook log is followed for at most this long; the whole run is far shorter.
WEBHOOK_TAIL_S_MAX = 3_600.0

# Where each headline figure of the ledger comes from in measure_ledger_projection's
# result: the one place to change when that module renames a key.
LEDGER_HEADLINE_KEYS = {
    "ledger_replay_events_per_s": "ledger_projection_events_per_s",
    "raw_copy_rows_per_s": "copy_rows_per_s",
    "ledger_replay_vs_copy_ratio": "projection_over_copy_ratio",
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Counts and durations of one run."""

    in_flight_counts: tuple[int, ...]
    warmup_s: float
    window_s: float
    payments_per_point_max: int
    payment_timeout_s: float
    # After the open loop: how long to wait for the webhooks of paid payments still
    # in the pipeline before the next part is measured.
    settle_s: float
    open_loop_rate_per_s: float
    open_loop_s: float
    idle_s: float
    broker_records: int
    # None: the default of the part's module (bench/ledger_projection.py,
    # bench/webhook_delivery.py).
    ledger_events: int | None
    webhook_deliveries: int | None
    webhook_idle_endpoints: int | None
    peer_events: int
    peer_repeat_count: int


FULL_PLAN = Plan(
    in_flight_counts=(8, 16, 32, 64, 128),
    warmup_s=3.0,
    window_s=10.0,
    payments_per_point_max=5_000,
    payment_timeout_s=60.0,
    settle_s=30.0,
    open_loop_rate_per_s=50.0,
    open_loop_s=20.0,
    idle_s=30.0,
    broker_records=20_000,
    ledger_events=None,
    webhook_deliveries=None,
    webhook_idle_endpoints=None,
    peer_events=event_store_peer.EVENT_COUNT_DEFAULT,
    peer_repeat_count=event_store_peer.REPEAT_COUNT_DEFAULT,
)

QUICK_PLAN = Plan(
    in_flight_counts=(4, 16),
    warmup_s=1.0,
    window_s=4.0,
    payments_per_point_max=1_000,
    payment_timeout_s=20.0,
    settle_s=15.0,
    open_loop_rate_per_s=50.0,
    open_loop_s=4.0,
    idle_s=5.0,
    broker_records=2_000,
    ledger_events=500,
    webhook_deliveries=200,
    webhook_idle_endpoints=500,
    peer_events=400,
    peer_repeat_count=1,
)


# -- end to end --------------------------------------------------------------------------
def no_collapse_check(best: dict[str, Any], overload: dict[str, Any]) -> dict[str, Any]:
    """Throughput at NO_COLLAPSE_FACTOR times the best point's in-flight count, relative
    to the best, and how many creates were answered before the payment was payable."""
    ratio = overload["payments_per_s"] / best["payments_per_s"] if best["payments_per_s"] else None
    creates = overload["started_in_window"]
    return {
        "best_in_flight": best["in_flight"],
        "in_flight": overload["in_flight"],
        "payments_per_s": overload["payments_per_s"],
        "ratio_to_best": round(ratio, 3) if ratio is not None else None,
        "creates": creates,
        "creates_not_payable": overload["creates_not_payable"],
        "creates_not_payable_by_status": overload["creates_not_payable_by_status"],
        "creates_payable_fraction": (
            round(1 - overload["creates_not_payable"] / creates, 4) if creates else None
        ),
        "point": overload,
    }


def overload_payment_timeout_s(plan: Plan, in_flight: int, best_per_s: float) -> float:
    """How long one payment of the overload point may take: three times what Little's law
    expects at the best rate, within [plan.payment_timeout_s, OVERLOAD_PAYMENT_TIMEOUT_S_MAX].

    A slot that gives up on a payment starts the next one while the platform still works
    on the first, so a timeout shorter than the expected latency would load the platform
    with more payments than the point's in-flight count.
    """
    expected_s = in_flight / best_per_s if best_per_s > 0 else math.inf
    return min(OVERLOAD_PAYMENT_TIMEOUT_S_MAX, max(plan.payment_timeout_s, 3 * expected_s))


async def measure_end_to_end(info: PlatformInfo, plan: Plan) -> dict[str, Any]:
    """The sweep, the no-collapse point and the open loop, on one client session."""
    assert info.demo_api_key is not None and info.demo_webhook_log is not None
    target = Target(api_base_url=info.api_base_url, api_key=info.demo_api_key)
    webhooks = WebhookTail(info.demo_webhook_log)
    follower = asyncio.create_task(webhooks.follow(WEBHOOK_TAIL_S_MAX))
    bounds: dict[str, Any] = {
        "warmup_s": plan.warmup_s,
        "window_s": plan.window_s,
        "payment_count_max": plan.payments_per_point_max,
        "payment_timeout_s": plan.payment_timeout_s,
    }
    try:
        async with client_session() as session:
            # Warm up connections, prepared statements and consumer groups.
            await closed_loop_point(
                session,
                target,
                webhooks,
                WARMUP_PAYMENT_COUNT,
                warmup_s=0.0,
                window_s=0.1,
                payment_count_max=WARMUP_PAYMENT_COUNT,
                payment_timeout_s=plan.payment_timeout_s,
            )
            print("Sweeping payments in flight...", flush=True)
            points = await sweep(session, target, webhooks, plan.in_flight_counts, **bounds)
            best = max(points, key=lambda point: float(point["payments_per_s"]))
            overload_in_flight = min(IN_FLIGHT_MAX, NO_COLLAPSE_FACTOR * best["in_flight"])
            print(f"  {overload_in_flight} payments in flight (overload)...", flush=True)
            overload = await closed_loop_point(
                session,
                target,
                webhooks,
                overload_in_flight,
                **{
                    **bounds,
                    "payment_timeout_s": overload_payment_timeout_s(
                        plan, overload_in_flight, best["payments_per_s"]
                    ),
                },
            )
            print(
                f"Open loop: {plan.open_loop_rate_per_s} payments/s for {plan.open_loop_s} s...",
                flush=True,
            )
            offered, offered_payments = await open_loop(
                session,
                target,
                webhooks,
                rate_per_s=plan.open_loop_rate_per_s,
                duration_s=plan.open_loop_s,
                payment_timeout_s=plan.payment_timeout_s,
            )
            offered["settled"] = await settle(webhooks, offered_payments, plan.settle_s)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    return {
        "sweep": points,
        "best": best,
        "no_collapse": no_collapse_check(best, overload),
        "open_loop": offered,
    }


def sweep_summary(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `e2e_sweep` entries: the headline fields of each point."""
    fields = ("in_flight", "payments_per_s", "p50_ms", "p99_ms", "create_p99_ms")
    return [{name: point[name] for name in fields} for point in points]


class PhaseClock:
    """Seconds each phase of the run took, so the run's length can be kept in bounds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self._last, 1)
        self._last = now


# -- other parts -------------------------------------------------------------------------
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
    connection = await asyncpg.connect(database_url, timeout=10.0)
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


def guarded(
    part: str, measure: Callable[[], dict[str, Any]], failures: list[str]
) -> dict[str, Any]:
    """`measure()`, or {"error": ...} when it raises, so one failing part does not lose
    the figures of the others; the part's name is added to `failures`."""
    try:
        return measure()
    except Exception as error:
        traceback.print_exc()
        failures.append(part)
        return {"error": f"{type(error).__name__}: {error}"}


# The ledger and webhook parts import their modules when they run, not at the top: each
# follows its own part of the runtime, and one that does not import while that part is
# being changed must fail alone instead of stopping every other figure.
def measure_ledger(info: PlatformInfo, plan: Plan, state_dir: Path) -> dict[str, Any]:
    """Raises ValueError for an event count out of the ledger benchmark's bounds."""
    from bench.ledger_projection import (
        EVENT_COUNT_DEFAULT,
        EVENT_COUNT_MAX,
        PROJECTION_TIMEOUT_S_DEFAULT,
        measure_ledger_projection,
    )

    event_count = plan.ledger_events or EVENT_COUNT_DEFAULT
    if not 1 <= event_count <= EVENT_COUNT_MAX:
        raise ValueError(f"ledger events must be between 1 and {EVENT_COUNT_MAX}")
    print(f"Projecting {event_count} events through the ledger...", flush=True)
    with service_logging(state_dir / "logs" / "bench_ledger_projection.log", "ledger"):
        return asyncio.run(
            measure_ledger_projection(
                _projection_settings(info), event_count, timeout_s=PROJECTION_TIMEOUT_S_DEFAULT
            )
        )


def measure_webhooks(info: PlatformInfo, plan: Plan, state_dir: Path) -> dict[str, Any]:
    """Raises ValueError for counts out of the webhook benchmark's bounds."""
    from bench.webhook_delivery import (
        DELIVERY_COUNT_DEFAULT,
        IDLE_ENDPOINT_COUNT_DEFAULT,
        measure_webhook_delivery,
    )

    deliveries = plan.webhook_deliveries or DELIVERY_COUNT_DEFAULT
    idle_endpoints = plan.webhook_idle_endpoints or IDLE_ENDPOINT_COUNT_DEFAULT
    print(f"Delivering {deliveries} webhooks...", flush=True)
    with service_logging(state_dir / "logs" / "bench_webhook_delivery.log", "notifier"):
        return asyncio.run(measure_webhook_delivery(info.database_url, deliveries, idle_endpoints))


def measure_peer(info: PlatformInfo, plan: Plan, state_dir: Path) -> dict[str, Any]:
    print(f"Appending {plan.peer_events} events with payrail and the peer...", flush=True)
    with service_logging(state_dir / "logs" / "bench_event_store_peer.log", "bench"):
        return asyncio.run(
            event_store_peer.measure_event_store_peer(
                info.database_url, plan.peer_events, repeat_count=plan.peer_repeat_count
            )
        )


def measure_parts(
    info: PlatformInfo, plan: Plan, state_dir: Path, failures: list[str], clock: PhaseClock
) -> dict[str, dict[str, Any]]:
    """Parts 4 to 7 of the module docstring, each guarded and timed."""
    measures: dict[str, Callable[[], dict[str, Any]]] = {
        "broker_raw": lambda: asyncio.run(
            measure_broker(info.kafka_bootstrap_servers, plan.broker_records)
        ),
        "ledger_projection": lambda: measure_ledger(info, plan, state_dir),
        "webhook_delivery": lambda: measure_webhooks(info, plan, state_dir),
        "peer_comparison": lambda: measure_peer(info, plan, state_dir),
    }
    parts: dict[str, dict[str, Any]] = {}
    for part, measure in measures.items():
        parts[part] = guarded(part, measure, failures)
        clock.lap(part)
    return parts


# -- the report --------------------------------------------------------------------------
def ledger_headline(ledger_projection: dict[str, Any]) -> dict[str, Any]:
    """The ledger's headline figures under their benchmark names (None when missing)."""
    return {name: ledger_projection.get(source) for name, source in LEDGER_HEADLINE_KEYS.items()}


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures every run reports at the top of latest.json."""
    end_to_end = results["end_to_end"]
    return {
        "e2e_payments_per_s": end_to_end["best"]["payments_per_s"],
        "e2e_sweep": sweep_summary(end_to_end["sweep"]),
        "no_collapse": {
            name: value for name, value in end_to_end["no_collapse"].items() if name != "point"
        },
        "e2e_p50_ms": end_to_end["open_loop"]["p50_ms"],
        "e2e_p99_ms": end_to_end["open_loop"]["p99_ms"],
        **ledger_headline(results["ledger_projection"]),
        "idle_cpu_percent_of_core": results["idle_cpu"]["cpu_percent_of_core"],
        "rss_mb": results["rss_mb"],
        "peer_comparison": results["peer_comparison"],
    }


def _headline_rows(summary: dict[str, Any], results: dict[str, Any]) -> list[tuple[str, object]]:
    best, offered = results["end_to_end"]["best"], results["end_to_end"]["open_loop"]
    collapse = summary["no_collapse"]
    rows: list[tuple[str, object]] = [
        (
            "e2e_payments_per_s",
            f"{summary['e2e_payments_per_s']} (at {best['in_flight']} in flight)",
        ),
        *(
            (
                f"  in flight {point['in_flight']}",
                f"{point['payments_per_s']}/s, p50 {point['p50_ms']} ms, p99 {point['p99_ms']}"
                f" ms, create p99 {point['create_p99_ms']} ms, client CPU"
                f" {point['client_cpu_percent_of_core']}%",
            )
            for point in results["end_to_end"]["sweep"]
        ),
        (
            f"no_collapse (at {collapse['in_flight']} in flight)",
            f"ratio to best {collapse['ratio_to_best']}, creates answered before payable"
            f" {collapse['creates_not_payable']}/{collapse['creates']}",
        ),
        (f"e2e_p50_ms (open loop, {offered['offered_per_s']}/s offered)", summary["e2e_p50_ms"]),
        ("e2e_p99_ms", summary["e2e_p99_ms"]),
        (
            "  open loop completed",
            f"{offered['completed']}/{offered['started']} ({offered['completed_per_s']}/s),"
            f" creates answered before payable {offered['creates_not_payable']}",
        ),
    ]
    rows += [(name, summary[name]) for name in LEDGER_HEADLINE_KEYS]
    rows += [
        ("idle_cpu_percent_of_core", summary["idle_cpu_percent_of_core"]),
        ("  by process", results["idle_cpu"]["by_process"]),
        ("rss_mb", summary["rss_mb"]),
    ]
    return rows


def _part_rows(results: dict[str, Any]) -> list[tuple[str, object]]:
    """The detail lines of parts 4 to 7; a failed part shows its error."""
    rows: list[tuple[str, object]] = []
    risk, raw = results["risk"], results["broker_raw"]
    rows += [
        ("risk decision latency p50 ms (created -> decided)", risk.get("latency_ms_p50")),
        ("risk decision latency p99 ms", risk.get("latency_ms_p99")),
        ("raw broker produce records/s", raw.get("produce_records_per_s", raw.get("error"))),
        ("raw broker consume records/s", raw.get("consume_records_per_s")),
    ]
    for part in ("ledger_projection", "webhook_delivery", "peer_comparison"):
        if "error" in results[part]:
            rows.append((f"{part} failed", results[part]["error"]))
        else:
            rows += _table_rows_of(part)(results[part])
    return rows


def _table_rows_of(part: str) -> Callable[[dict[str, Any]], list[tuple[str, object]]]:
    """The table lines of a part that has been measured (so its module imports)."""
    if part == "ledger_projection":
        from bench.ledger_projection import table_rows as ledger_table_rows

        return ledger_table_rows
    if part == "webhook_delivery":
        from bench.webhook_delivery import table_rows as webhook_table_rows

        return webhook_table_rows
    return event_store_peer.table_rows


def table(summary: dict[str, Any], results: dict[str, Any]) -> str:
    rows = _headline_rows(summary, results) + _part_rows(results)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# -- the command -------------------------------------------------------------------------
def _plan(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> Plan:
    plan = QUICK_PLAN if arguments.quick else FULL_PLAN
    overrides: dict[str, Any] = {
        "in_flight_counts": arguments.in_flight,
        "window_s": arguments.window_s,
        "open_loop_rate_per_s": arguments.open_loop_rate,
        "open_loop_s": arguments.open_loop_s,
        "idle_s": arguments.idle_s,
        "broker_records": arguments.broker_records,
        "ledger_events": arguments.ledger_events,
        "webhook_deliveries": arguments.webhook_deliveries,
        "peer_events": arguments.peer_events,
    }
    plan = dataclasses.replace(
        plan, **{name: value for name, value in overrides.items() if value is not None}
    )
    if not all(1 <= count <= IN_FLIGHT_MAX for count in plan.in_flight_counts):
        parser.error(f"--in-flight counts must be between 1 and {IN_FLIGHT_MAX}")
    if not 0 < plan.window_s <= 300 or not 0 < plan.open_loop_s <= 300:
        parser.error("--window-s and --open-loop-s must be within (0, 300]")
    if not 0 < plan.open_loop_rate_per_s <= 1_000:
        parser.error("--open-loop-rate must be within (0, 1000]")
    if not 0 < plan.idle_s <= 600:
        parser.error("--idle-s must be within (0, 600]")
    if plan.webhook_deliveries is not None and plan.webhook_deliveries < 1:
        parser.error("--webhook-deliveries must be at least 1")
    if plan.ledger_events is not None and plan.ledger_events < 1:
        parser.error("--ledger-events must be at least 1")
    peer_events_max = event_store_peer.EVENT_COUNT_MAX
    if plan.peer_events % 10 or not 10 <= plan.peer_events <= peer_events_max:
        parser.error(f"--peer-events must be a multiple of 10 between 10 and {peer_events_max}")
    return plan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, short windows")
    parser.add_argument(
        "--in-flight",
        type=lambda text: tuple(int(count) for count in text.split(",")),
        help="comma-separated in-flight counts of the sweep (default 8,16,32,64,128)",
    )
    parser.add_argument("--window-s", type=float, help="measured seconds per sweep point")
    parser.add_argument("--open-loop-rate", type=float, help="payments/s offered (default 50)")
    parser.add_argument("--open-loop-s", type=float, help="seconds of open-loop load")
    parser.add_argument("--idle-s", type=float, help="seconds of idle CPU measurement")
    parser.add_argument("--broker-records", type=int)
    parser.add_argument("--ledger-events", type=int, help="events the ledger projects")
    parser.add_argument("--webhook-deliveries", type=int, help="webhooks the notifier delivers")
    parser.add_argument("--peer-events", type=int, help="events per peer scenario")
    return parser


def main() -> None:
    parser = _parser()
    arguments = parser.parse_args()
    plan = _plan(arguments, parser)
    state_dir = Path(tempfile.mkdtemp(prefix="payrail-bench-"))
    launcher = LauncherSettings.on_free_ports(state_dir)
    failures: list[str] = []
    clock = PhaseClock()
    print("Starting the platform for the benchmark...", flush=True)
    with Platform(launcher, ServiceSettings(kafka_topic_prefix="bench.")) as running:
        with service_logging(state_dir / "logs" / "bench_launcher.log", "launcher"):
            info = running.start()
        clock.lap("start")
        print(f"Measuring idle CPU for {plan.idle_s} s...", flush=True)
        idle_cpu = measure_idle_cpu(platform_processes(running), plan.idle_s)
        clock.lap("idle_cpu")
        measured_from = datetime.now(UTC)
        end_to_end = asyncio.run(measure_end_to_end(info, plan))
        clock.lap("end_to_end")
        rss_mb = resident_memory_mb(platform_processes(running))
        risk = guarded(
            "risk",
            lambda: asyncio.run(measure_risk_latency(info.database_url, measured_from)),
            failures,
        )
        parts = measure_parts(info, plan, state_dir, failures, clock)
    clock.lap("stop")
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(),
        "plan_name": "quick" if arguments.quick else "full",
        "plan": dataclasses.asdict(plan),
        "machine": {"cpus": os.cpu_count(), "python": host_platform.python_version()},
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded pgserver",
        "idle_cpu": idle_cpu,
        "rss_mb": rss_mb,
        "end_to_end": end_to_end,
        "risk": risk,
        **parts,
        "phase_s": clock.seconds,
        "failures": failures,
    }
    summary = headline(results)
    if "error" not in results["ledger_projection"]:
        # A renamed key in the ledger's result would otherwise report None silently.
        missing = [name for name in LEDGER_HEADLINE_KEYS if summary[name] is None]
        if missing:
            failures.append(f"ledger_projection keys for {', '.join(missing)}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "latest.json"
    out.write_text(json.dumps({**summary, **results}, indent=2) + "\n")
    print(table(summary, results))
    print(f"\nwritten: {out}")
    if failures:
        print(f"failed parts: {', '.join(failures)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
