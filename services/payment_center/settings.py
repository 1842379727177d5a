from __future__ import annotations

from pydantic import Field

from services.common.settings import ServiceSettings


class PaymentCenterSettings(ServiceSettings):
    http_port: int = Field(default=8001, description="Port of /healthz, /readyz and /metrics.")
