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

# Payers hear of their payment within seconds, and a sender's outage is retried for
# about an hour: a confirmation later than that is no longer worth sending.
DEFAULT_PAYER_NOTICE_SCHEDULE_MS: tuple[int, ...] = (0, 10_000, 60_000, 600_000, 3_600_000)


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
            "Delivery attempts in flight at once to one endpoint, counted across every "
            "notifier process, default 4: a slow or dead endpoint holds at most this many "
            "of the slots, never the other endpoints' turn."
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
    payer_notice_sender: str = Field(
        default="services.notifier.payer_notices:LogNoticeSender",
        min_length=3,
        max_length=200,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description=(
            "Sends payment confirmations and refund notices to payers, as `module:attribute`:"
            " an object with `async send(notice)`, or a class or factory that makes one. The "
            "default writes each notice to the log."
        ),
    )
    payer_notice_retry_schedule_ms: list[RetryDelayMs] = Field(
        default=list(DEFAULT_PAYER_NOTICE_SCHEDULE_MS),
        min_length=1,
        max_length=20,
        description=(
            "Delay before each attempt to send a payer notice, like the webhook schedule; "
            "default [0, 10000, 60000, 600000, 3600000]."
        ),
    )
    payer_notice_timeout_ms: int = Field(
        default=10_000,
        ge=1,
        le=60_000,
        description="Longest one send of a payer notice may take, default 10000.",
    )
    payer_notice_poll_interval_ms: int = Field(
        default=500,
        ge=10,
        le=60_000,
        description="Pause of the payer notice worker between looks for due notices.",
    )
