"""Prometheus metrics shared by every service (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "payrail_messages_consumed_total",
    "Kafka records handled by an inbox consumer, by outcome "
    "(applied, duplicate, skipped, dead_lettered).",
    ["consumer", "outcome"],
)
MESSAGE_HANDLING_SECONDS = Histogram(
    "payrail_message_handling_seconds",
    "Time to apply one partition batch, inbox statement and transaction included.",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_PUBLISHED = Counter(
    "payrail_outbox_published_total", "Messages the relay published.", ["schema"]
)
HTTP_REQUEST_SECONDS = Histogram(
    "payrail_http_request_seconds",
    "HTTP request latency by route and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PAYMENTS_FINISHED = Counter(
    "payrail_payments_finished_total",
    "Payments that reached a final status, by channel and status; the success rate is "
    "succeeded / all.",
    ["channel", "status"],
)
CONSUMER_LAG = Gauge(
    "payrail_consumer_lag_records",
    "Records behind the partition's high watermark after the last record handled.",
    ["consumer", "topic", "partition"],
)
DEAD_LETTERS_RECORDED = Counter(
    "payrail_dead_letters_total",
    "Messages a consumer parked as dead letters (first sight of each).",
    ["consumer"],
)
CONSUMER_BATCH_RECORDS = Histogram(
    "payrail_consumer_batch_records",
    "Records per partition batch taken by a consumer.",
    ["group"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
CONSUMER_TRANSIENT_RETRIES = Counter(
    "payrail_consumer_transient_retries_total",
    "Batches retried after an error that may pass (database or broker away).",
    ["group"],
)
CONSUMER_PARTITIONS_HELD = Gauge(
    "payrail_consumer_partitions_held",
    "Partitions whose batch has outlasted its retry budget and is still being retried.",
    ["group"],
)
BACKGROUND_LOOP_RESTARTS = Counter(
    "payrail_background_loop_restarts_total",
    "Times a background loop was started again after it crashed or returned.",
    ["service", "loop"],
)
BACKGROUND_LOOP_UP = Gauge(
    "payrail_background_loop_up",
    "1 while a background loop runs, 0 while it waits to be restarted or after the stop.",
    ["service", "loop"],
)
