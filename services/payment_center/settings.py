from __future__ import annotations

from pydantic import Field

from services.common.settings import ServiceSettings


class PaymentCenterSettings(ServiceSettings):
    http_port: int = Field(default=8001, description="Port of /healthz, /readyz and /metrics.")
    expiry_poll_interval_ms: int = Field(
        default=1_000,
        ge=10,
        le=60_000,
        description="How often unpaid payments are checked for expiry.",
    )
    expiry_batch_size_max: int = Field(
        default=100, ge=1, le=10_000, description="Payments one expiry round expires at most."
    )
