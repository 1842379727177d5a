"""Settings of the notifier, read only from the environment (or `.env`).

A list setting is given as JSON, e.g. `PAYRAIL_WEBHOOK_RETRY_SCHEDULE_MS='[0, 100, 200]'`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from services.common.settings import ServiceSettings

# One day: a longer single wait would keep a merchant's data stale for longer than any
# receiver outage worth waiting for.
RETRY_DELAY_MS_MAX = 86_400_000

RetryDelayMs = Annotated[int, Field(ge=0, le=RETRY_DELAY_MS_MAX)]

# Svix-like: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 28 hours in all).
DEFAULT_RETRY_SCHEDULE_MS: tuple[int, ...] = (
    0,
    5_000,
    300_000,
    1_800_000,
    7_200_000,
    18_000_000,
    36_000_000,
    36_000_000,
)


class NotifierSettings(ServiceSettings):
    http_port: int = Field(
        default=8004, ge=0, le=65_535, description="Port of the internal HTTP API, default 8004."
    )
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Hosts webhooks may target although they are (or resolve to) loopback, "
        'private or link-local addresses, e.g. ["127.0.0.1"] for a local demo; empty in '
        "production, where such targets are refused.",
    )
    ops_webhook_url: str | None = Field(
        default=None,
        description="Where operations receive risk alerts (`risk.alert`), signed and retried "
        "like merchants' webhooks; unset: alerts are only logged and listed as events.",
    )
    ops_webhook_secret: SecretStr = Field(
        default=SecretStr("whsec_ops_change_me"),
        description="Signing secret of the ops webhook.",
    )
    webhook_retry_schedule_ms: list[RetryDelayMs] = Field(
        default=list(DEFAULT_RETRY_SCHEDULE_MS),
        min_length=1,
        max_length=20,
        description=(
            "Delay before each delivery attempt, one entry per attempt: the first counts from "
            "the event's arrival, each later one from the end of the previous attempt. Its "
            "length is the number of attempts before a delivery is marked failed; default "
            "[0, 5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000]."
        ),
    )
    webhook_timeout_ms: int = Field(
        default=5_000,
        ge=1,
        le=60_000,
        description=(
            "Longest one delivery attempt may take, connecting and reading the response "
            "included, default 5000. A slower receiver counts as a failed attempt."
        ),
    )
    webhook_concurrency_max: int = Field(
        default=16, ge=1, le=1_024, description="Delivery attempts in flight at once, default 16."
    )
    webhook_endpoint_concurrency_max: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Delivery attempts in flight at once to one endpoint, default 4: a slow or dead "
            "endpoint holds at most this many of the slots, never the other endpoints' turn."
        ),
    )
    webhook_disable_after_ms: int = Field(
        default=3 * 86_400_000,
        ge=0,
        le=30 * 86_400_000,
        description=(
            "An endpoint whose every attempt has failed for this long is disabled, with a "
            "`webhook_endpoint.disabled` event and an alert to operations; default three "
            "days (259200000), 0 never disables. Its deliveries wait until it is enabled."
        ),
    )
    queue_gauges_interval_ms: int = Field(
        default=5_000,
        ge=100,
        le=300_000,
        description="How often the delivery queue's depth and oldest age are measured.",
    )
    delivery_poll_interval_ms: int = Field(
        default=200,
        ge=10,
        le=60_000,
        description=(
            "Longest pause of the delivery worker between looks for due deliveries (retries "
            "coming due); newly queued ones and freed slots wake it at once. Default 200."
        ),
    )
