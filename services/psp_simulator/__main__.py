"""Run the PSP simulator: `python -m services.psp_simulator`."""

from __future__ import annotations

import uvicorn

from services.common.logging import configure_logging
from services.psp_simulator.app import create_app
from services.psp_simulator.settings import PspSimulatorSettings

# Seconds uvicorn waits for open requests on shutdown before closing them.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 5


def main() -> None:
    settings = PspSimulatorSettings()
    configure_logging("psp_simulator", settings.log_level, settings.log_format)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # Logging is already configured; uvicorn must not replace the handlers.
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT_S,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
