"""`python -m services.notifier`: run the notifier until SIGINT/SIGTERM."""

from __future__ import annotations

from services.common.service import serve
from services.notifier.app import create_app
from services.notifier.settings import NotifierSettings


def main() -> None:
    settings = NotifierSettings()
    serve(create_app(settings), settings.http_host, settings.http_port)


if __name__ == "__main__":
    main()
