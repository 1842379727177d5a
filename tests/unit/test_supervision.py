"""The background-loop supervisor: restarts with capped, growing backoff; down reporting."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from services.common.invariant import InvariantViolation
from services.common.supervision import Backoff, LoopSupervisor, SupervisionPolicy
from tests.support.polling import wait_until

DOWN_UNREADY_AFTER_S = 10.0
HEALTHY_AFTER_S = 60.0


class FakeTime:
    """A monotonic clock the test moves, and a sleep that records the backoff it was asked
    for and returns when the test lets it."""

    def __init__(self) -> None:
        self.now_s = 1_000.0
        self.sleeps_s: list[float] = []
        self.release = asyncio.Event()

    def monotonic(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.sleeps_s.append(delay_s)
        await self.release.wait()
        self.release.clear()
        self.now_s += delay_s


def supervisor(fake_time: FakeTime, service: str, backoff: Backoff) -> LoopSupervisor:
    return LoopSupervisor(
        service,
        SupervisionPolicy(
            backoff=backoff,
            healthy_after_s=HEALTHY_AFTER_S,
            down_unready_after_s=DOWN_UNREADY_AFTER_S,
        ),
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,
        jitter=lambda: 0.0,
    )


def metric(name: str, service: str, loop: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service, "loop": loop})


def test_the_backoff_doubles_from_the_initial_wait_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, s_max=1.0, jitter_ratio=0.0)
    waits = [backoff.delay_s(failure_count, 0.0) for failure_count in range(1, 8)]
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    # Thousands of crashes in a row stay at the cap instead of overflowing.
    assert backoff.delay_s(10_000, 0.0) == 1.0


def test_jitter_only_shortens_the_wait() -> None:
    backoff = Backoff(initial_s=2.0, s_max=30.0, jitter_ratio=0.2)
    assert backoff.delay_s(1, 0.0) == pytest.approx(2.0)
    assert backoff.delay_s(1, 0.5) == pytest.approx(1.8)
    assert backoff.delay_s(1, 0.999) == pytest.approx(1.6004)
    assert backoff.delay_s(20, 0.999) <= 30.0


async def test_a_loop_that_raises_twice_is_restarted_twice_and_then_runs() -> None:
    fake_time = FakeTime()
    service = f"svc_{uuid.uuid4().hex[:8]}"
    loops = supervisor(fake_time, service, Backoff(initial_s=4.0, s_max=7.0, jitter_ratio=0.0))
    attempts = 0
    running = asyncio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise RuntimeError(f"crash {attempts}")
        running.set()
        await asyncio.Event().wait()

    loops.start("flaky", flaky)
    try:
        await wait_until(lambda: len(fake_time.sleeps_s) == 1, timeout_s=5, what="first crash")
        status = loops.status("flaky")
        assert (status.up, status.down_since_s, status.restart_count) == (False, 1_000.0, 0)
        assert metric("payrail_background_loop_up", service, "flaky") == 0
        # Down for 4 s of the 10 s allowed: not yet reported.
        assert loops.down_for_too_long(now=1_000.0 + DOWN_UNREADY_AFTER_S) == []

        fake_time.release.set()
        await wait_until(lambda: len(fake_time.sleeps_s) == 2, timeout_s=5, what="second crash")
        fake_time.release.set()
        await wait_until(lambda: len(fake_time.sleeps_s) == 3, timeout_s=5, what="third crash")
        # The wait doubled, then stopped at the cap.
        assert fake_time.sleeps_s == [4.0, 7.0, 7.0]
        # A loop failing at once on every start stays down since its first crash: 11 s
        # have passed on the fake clock, more than the 10 s allowed.
        status = loops.status("flaky")
        assert (status.up, status.down_since_s, status.failure_count) == (False, 1_000.0, 3)
        assert loops.down_for_too_long(now=fake_time.now_s) == ["flaky"]

        fake_time.release.set()
        await asyncio.wait_for(running.wait(), timeout=5)
        status = loops.status("flaky")
        assert (status.up, status.down_since_s, status.restart_count) == (True, None, 3)
        assert loops.down_for_too_long(now=fake_time.now_s + 1_000) == []
        assert metric("payrail_background_loop_up", service, "flaky") == 1
        assert metric("payrail_background_loop_restarts_total", service, "flaky") == 3
    finally:
        await loops.stop()
    assert metric("payrail_background_loop_up", service, "flaky") == 0


async def test_a_loop_that_ran_long_enough_starts_its_backoff_over() -> None:
    fake_time = FakeTime()
    loops = supervisor(fake_time, f"svc_{uuid.uuid4().hex[:8]}", Backoff(initial_s=1.0, s_max=30.0))
    proceed = asyncio.Queue[str]()

    async def worker() -> None:
        outcome = await proceed.get()
        if outcome == "run long":
            fake_time.now_s += HEALTHY_AFTER_S
        raise RuntimeError(outcome)

    async def crash(outcome: str, crash_count: int) -> None:
        await proceed.put(outcome)
        await wait_until(
            lambda: len(fake_time.sleeps_s) == crash_count,
            timeout_s=5,
            what=f"crash {crash_count}",
        )

    loops.start("worker", worker)
    try:
        for crash_count in range(1, 4):
            await crash("crash at once", crash_count)
            fake_time.release.set()
        await crash("run long", 4)
        assert fake_time.sleeps_s == [1.0, 2.0, 4.0, 1.0]
        status = loops.status("worker")
        assert (status.failure_count, status.down_since_s) == (1, fake_time.now_s)
    finally:
        await loops.stop()


async def test_a_loop_that_returns_is_restarted_and_cancellation_is_not_a_crash() -> None:
    fake_time = FakeTime()
    loops = supervisor(fake_time, f"svc_{uuid.uuid4().hex[:8]}", Backoff(initial_s=1.0, s_max=30.0))
    starts = 0

    async def returns_once() -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            return
        await asyncio.Event().wait()

    loops.start("returns_once", returns_once)
    await wait_until(lambda: fake_time.sleeps_s == [1.0], timeout_s=5, what="the return")
    fake_time.release.set()
    await wait_until(lambda: loops.status("returns_once").up, timeout_s=5, what="restart")
    await loops.stop()
    status = loops.status("returns_once")
    assert (status.up, status.restart_count, starts) == (False, 1, 2)
    # Cancelled by the stop, not crashed: no further backoff was asked for.
    assert fake_time.sleeps_s == [1.0]
    assert loops.down_for_too_long(now=fake_time.now_s) == []


async def test_a_name_is_started_once_and_nothing_starts_after_the_stop() -> None:
    loops = supervisor(FakeTime(), f"svc_{uuid.uuid4().hex[:8]}", Backoff(1.0, 30.0))

    async def idle() -> None:
        await asyncio.Event().wait()

    loops.start("idle", idle)
    with pytest.raises(InvariantViolation):
        loops.start("idle", idle)
    await loops.stop()
    with pytest.raises(InvariantViolation):
        loops.start("other", idle)
