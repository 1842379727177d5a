"""Prometheus metrics shared by every service (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "payrail_messages_consumed_total",
    "Kafka records handled by an inbox consumer, by outcome "
    "(applied, duplicate, skipped, dead_lettered, rewound).",
    ["consumer", "outcome"],
)
MESSAGE_HANDLING_SECONDS = Histogram(
    "payrail_message_handling_seconds",
    "Time to apply one message, inbox transaction included.",
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
