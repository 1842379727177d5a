from __future__ import annotations

from pydantic import Field

from schemas.money import AMOUNT_MINOR_MAX
from services.common.settings import ServiceSettings


class RiskSettings(ServiceSettings):
    http_port: int = Field(default=8003, description="Port of /healthz, /readyz and /metrics.")
    default_single_payment_limit_minor: int = Field(
        default=5_000_000,
        gt=0,
        le=AMOUNT_MINOR_MAX,
        description="Platform default single-payment limit for merchants without their own.",
    )
