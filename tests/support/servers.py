"""In-process HTTP servers for tests: the PSP simulator and small receivers, each served by
uvicorn on a socket bound to 127.0.0.1 inside the test's event loop.

Also the fine-grained polling that such tests use to wait for what those servers do.
"""

from __future__ import annotations

import asyncio
import socket
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.psp_simulator.app import create_app
from services.psp_simulator.settings import PspSimulatorSettings

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.01
# Notification retries fast enough for tests to see several attempts.
FAST_RETRY_SCHEDULE_MS = [0, 50, 100]


async def comes_true_within(condition: Callable[[], bool], *, timeout_s: float) -> bool:
    """Poll `condition` until `timeout_s` passes; return whether it ever held.

    Polls every POLL_INTERVAL_S on the event loop's clock: for state that servers running
    in this event loop change (see tests.support.polling for other processes).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(POLL_INTERVAL_S)
    return True


async def wait_until(condition: Callable[[], bool], *, what: str, timeout_s: float) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    if not await comes_true_within(condition, timeout_s=timeout_s):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


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
        await wait_until(
            lambda: server.started or task.done(), what="uvicorn", timeout_s=STARTUP_TIMEOUT_S
        )
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


class NotifyReceiver(ABC):
    """A small server that takes the simulator's notifications: one route, POST /notify.

    Subclasses record what arrives and decide the answer in `receive`.
    """

    @abstractmethod
    async def receive(self, request: Request) -> Response:
        """Handle one notification POSTed to /notify."""

    def app(self) -> Starlette:
        """The Starlette app that hands every POST to /notify to `receive`."""
        return Starlette(routes=[Route("/notify", self.receive, methods=["POST"])])


@asynccontextmanager
async def running_receiver(receiver: NotifyReceiver) -> AsyncIterator[str]:
    """Serve `receiver` on 127.0.0.1; yield its notify URL."""
    listener = bind_local_socket()
    port = listener.getsockname()[1]
    async with serving(receiver.app(), listener):
        yield f"http://127.0.0.1:{port}/notify"
