from __future__ import annotations

from pydantic import Field

from services.common.settings import ServiceSettings

# Ask the channel 1, 2, 5 and 10 minutes after a payment awaits the payer (each delay
# counted from the previous query).
DEFAULT_CHANNEL_QUERY_SCHEDULE_MS: tuple[int, ...] = (60_000, 120_000, 300_000, 600_000)


class PaymentCenterSettings(ServiceSettings):
    http_port: int = Field(default=8001, description="Port of /healthz, /readyz and /metrics.")
    expiry_poll_interval_ms: int = Field(
        default=1_000,
        ge=10,
        le=60_000,
        description="How often unpaid payments are checked for expiry.",
    )
    channel_query_schedule_ms: list[int] = Field(
        default=list(DEFAULT_CHANNEL_QUERY_SCHEDULE_MS),
        min_length=1,
        max_length=20,
        description=(
            "When no channel notification has arrived, ask the channel after each of these"
            " delays (one per query, counted from the previous one); then stop."
        ),
    )
    automatic_refund_retry_schedule_ms: list[int] = Field(
        default=[60_000, 300_000, 1_800_000, 7_200_000, 21_600_000],
        min_length=1,
        max_length=20,
        description=(
            "A refund payrail started by itself (a late payment, a cancelled order) that the"
            " channel refuses is tried again after each of these pauses (one per failed"
            " attempt); after the last it is listed as exhausted for operations."
        ),
    )
    expiry_batch_size_max: int = Field(
        default=100, ge=1, le=10_000, description="Payments one expiry round expires at most."
    )
