"""The public API's OpenAPI document, checked in at docs/openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

OPENAPI_DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def openapi_document() -> str:
    """Build the document from the app's routes; nothing connects."""
    app = create_app(GatewaySettings(log_format="console"))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
