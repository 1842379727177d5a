"""A service whose background loop crashes: the loop is restarted, and /readyz answers 503
while it has been down too long and 200 again once it runs. A real service app with its
lifespan, against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from prometheus_client import REGISTRY

from services.common.service import ServiceContext, create_service_app
from services.common.settings import ServiceSettings
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

DOWN_UNREADY_AFTER_S = 0.5


class ControlledLoop:
    """A background loop that runs until told to crash, and crashes at every start while
    `failing` holds."""

    def __init__(self) -> None:
        self.failing = False
        self.crash_requested = asyncio.Event()
        self.start_count = 0

    async def probe_loop(self) -> None:
        self.start_count += 1
        if self.failing:
            raise RuntimeError("the probe loop fails at start")
        await self.crash_requested.wait()
        raise RuntimeError("the probe loop was asked to crash")


async def test_a_crashed_loop_is_restarted_and_readyz_is_503_while_it_is_down_too_long(
    settings: ServiceSettings,
) -> None:
    service = f"supervision_{uuid.uuid4().hex[:8]}"
    loop = ControlledLoop()
    contexts: list[ServiceContext] = []

    async def wiring(context: ServiceContext) -> None:
        contexts.append(context)
        context.background.append(loop.probe_loop)

    app = create_service_app(
        service,
        ServiceSettings(
            **{
                **settings.model_dump(),
                "background_loop_backoff_initial_s": 0.05,
                "background_loop_backoff_s_max": 0.2,
                "background_loop_down_unready_after_s": DOWN_UNREADY_AFTER_S,
            }
        ),
        wiring=wiring,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service"
        ) as client,
    ):
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert loop.start_count == 1

        crashed_at_s = time.monotonic()
        loop.failing = True
        loop.crash_requested.set()

        async def readiness(expected_status: int) -> bool:
            answer = await client.get("/readyz")
            return answer.status_code == expected_status

        await wait_until(lambda: readiness(503), timeout_s=10, what="/readyz to answer 503")
        assert time.monotonic() - crashed_at_s > DOWN_UNREADY_AFTER_S
        unready = await client.get("/readyz")
        assert unready.status_code == 503
        assert unready.json() == {"status": "unavailable", "down_loops": ["probe_loop"]}
        # It keeps being restarted while it fails.
        await wait_until(lambda: loop.start_count >= 3, timeout_s=10, what="restarts")

        loop.failing = False
        loop.crash_requested.clear()
        await wait_until(lambda: readiness(200), timeout_s=10, what="/readyz to answer 200")
        status = contexts[0].supervisor.status("probe_loop")
        assert status.up
        assert status.restart_count == loop.start_count - 1 >= 2
        assert contexts[0].supervisor.status("outbox_relay").up
        labels = {"service": service, "loop": "probe_loop"}
        assert REGISTRY.get_sample_value("payrail_background_loop_restarts_total", labels) == float(
            status.restart_count
        )
        assert REGISTRY.get_sample_value("payrail_background_loop_up", labels) == 1.0
        metrics = await client.get("/metrics")
        assert f'payrail_background_loop_up{{loop="probe_loop",service="{service}"}} 1.0' in (
            metrics.text
        )
