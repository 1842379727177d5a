"""In-process HTTP servers for tests: the PSP simulator and small receivers, each served by
uvicorn on a socket bound to 127.0.0.1 inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from services.psp_simulator.app import create_app
from services.psp_simulator.settings import PspSimulatorSettings

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.01
# Notification retries fast enough for tests to see several attempts.
FAST_RETRY_SCHEDULE_MS = [0, 50, 100]


async def _wait_for(condition: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {STARTUP_TIMEOUT_S} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


def bind_local_socket() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    return listener


@asynccontextmanager
async def serving(app: Any, listener: socket.socket) -> AsyncIterator[uvicorn.Server]:
    """Serve `app` on the already bound `listener` until the block ends."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await _wait_for(lambda: server.started or task.done(), "uvicorn")
        if task.done():
            task.result()
            raise AssertionError("uvicorn stopped during startup")
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=SHUTDOWN_TIMEOUT_S)
        listener.close()


@asynccontextmanager
async def running_simulator(**overrides: Any) -> AsyncIterator[str]:
    """Start the simulator with `overrides` applied to its settings; yield its base URL."""
    listener = bind_local_socket()
    settings = PspSimulatorSettings(
        host="127.0.0.1",
        port=listener.getsockname()[1],
        **{
            "notify_retry_schedule_ms": FAST_RETRY_SCHEDULE_MS,
            "notify_timeout_ms": 2000,
            **overrides,
        },
    )
    async with serving(create_app(settings), listener), httpx.AsyncClient() as client:
        health_url = f"{settings.base_url}/healthz"
        await wait_until_healthy(client, health_url)
        yield settings.base_url


async def wait_until_healthy(client: httpx.AsyncClient, url: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while True:
        try:
            response = await client.get(url, timeout=1.0)
            if response.status_code == 200 and response.json() == {"status": "ok"}:
                return
        except httpx.TransportError:
            pass
        if loop.time() > deadline:
            raise AssertionError(f"{url} did not become healthy within {STARTUP_TIMEOUT_S} s")
        await asyncio.sleep(POLL_INTERVAL_S)
