from __future__ import annotations

from pydantic import Field

from schemas.money import AMOUNT_MINOR_MAX
from services.common.settings import ServiceSettings
from services.risk.monitoring import AlertThresholds


class RiskSettings(ServiceSettings):
    http_port: int = Field(default=8003, description="Port of /healthz, /readyz and /metrics.")
    default_single_payment_limit_minor: int = Field(
        default=5_000_000,
        gt=0,
        le=AMOUNT_MINOR_MAX,
        description="Platform default single-payment limit for merchants without their own.",
    )

    alert_channel_success_rate_min: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Alert when fewer of a channel's last 50 finished payments succeed.",
    )
    alert_refund_rate_max: float = Field(
        default=0.3,
        ge=0,
        description="Alert when a merchant's refunds per payment over 24 h exceed this.",
    )
    alert_payer_failures_max: int = Field(
        default=5, ge=1, description="Alert when one payer fails this often within 10 minutes."
    )
    alert_cooldown_seconds: int = Field(
        default=3600, ge=0, description="At most one alert per subject within this time."
    )

    def alert_thresholds(self) -> AlertThresholds:
        return AlertThresholds(
            channel_success_rate_min=self.alert_channel_success_rate_min,
            refund_rate_max=self.alert_refund_rate_max,
            payer_failures_max=self.alert_payer_failures_max,
            cooldown_seconds=self.alert_cooldown_seconds,
        )
