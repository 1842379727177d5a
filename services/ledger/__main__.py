"""`python -m services.ledger`: run the ledger service until SIGINT or SIGTERM."""

from __future__ import annotations

from services.common.service import serve
from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings


def main() -> None:
    settings = LedgerSettings()
    serve(create_app(settings), settings.http_host, settings.http_port)


if __name__ == "__main__":
    main()
