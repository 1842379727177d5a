"""A demo merchant's webhook receiver: verifies every delivery with the shipped signature
helper and appends it to a JSON-lines file. `make run` starts it so the walk-through
shows webhooks arriving; it is also a working example for merchants.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.notifier.signature import SignatureVerificationError, verify


class DemoReceiverSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYRAIL_DEMO_RECEIVER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8200
    secret_file: Path = Field(default=Path(".payrail/demo_webhook_secret"))
    log_file: Path = Field(default=Path(".payrail/logs/demo_webhooks.jsonl"))


def create_app(settings: DemoReceiverSettings) -> FastAPI:
    app = FastAPI(title="payrail demo webhook receiver")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhooks")
    async def receive(request: Request) -> Response:
        body = await request.body()
        secret = settings.secret_file.read_text().strip() if settings.secret_file.exists() else ""
        try:
            if not secret:
                raise SignatureVerificationError("no_secret_configured")
            verify(
                request.headers.get("Payrail-Signature", ""), body, [secret], now=int(time.time())
            )
            verified, reason = True, None
        except SignatureVerificationError as error:
            verified, reason = False, error.reason
        event = json.loads(body) if verified else None
        line = {
            "received_at": time.time(),
            "event_id": request.headers.get("Payrail-Event-Id"),
            "verified": verified,
            "reason": reason,
            "type": event.get("type") if event else None,
            "event": event,
        }
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        with settings.log_file.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        return Response(status_code=200 if verified else 400)

    return app


def main() -> None:
    settings = DemoReceiverSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
