"""Settings of the ledger service, read only from the environment or `.env`."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from services.common.settings import ServiceSettings


class LedgerSettings(ServiceSettings):
    """The shared runtime settings plus the ledger's own.

    `http_port` reads `PAYRAIL_LEDGER_HTTP_PORT` first, so one `.env` can hold the ports of
    every service; `PAYRAIL_HTTP_PORT` is accepted as well for a process of its own.
    """

    http_port: int = Field(
        default=8002,
        ge=0,
        le=65_535,
        validation_alias=AliasChoices("PAYRAIL_LEDGER_HTTP_PORT", "PAYRAIL_HTTP_PORT"),
        description="Port the ledger's HTTP server binds, default 8002.",
    )
