"""Logging of a benchmark part that runs a service's code inside the benchmark's process."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from services.common.logging import configure_logging


@contextlib.contextmanager
def service_logging(log_path: Path, service: str) -> Iterator[None]:
    """Log as `service`'s process does (JSON lines at INFO), into `log_path` instead of
    the terminal, so the benchmark's table stays readable; afterwards only warnings reach
    stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log_file:
        # configure_logging's handler writes to whatever sys.stderr is when it is called.
        with contextlib.redirect_stderr(log_file):
            configure_logging(service, "INFO", "json")
        try:
            yield
        finally:
            root = logging.getLogger()
            root.handlers[:] = []
            root.setLevel(logging.WARNING)
