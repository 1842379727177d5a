"""End-to-end load on a running platform: create a payment over HTTP, pay it at the PSP
simulator, and wait for the signed `payment.succeeded` webhook at the demo merchant's
receiver.

The load generator is aiohttp on one event loop: it costs about 0.2 ms of client CPU per
request here, against 1.1 to 1.9 ms for httpx, so on two shared cores the platform and not
the client sets the pace. Two shapes of load:

1. Closed loop (`closed_loop_point`): a fixed number of payments in flight. Each slot
   starts a payment, waits for its webhook, and starts the next. Once the point is warm
   (as many payments finished as are in flight, so the first wave into an empty pipeline
   is not measured), the rate is the webhooks received inside the measured window divided
   by its length, and the latencies are those of the payments started inside it. The
   client's own CPU over the point is reported with it, to show that the client is not
   the limit. `sweep` runs one point per in-flight count.
2. Open loop (`open_loop`): one payment started every 1/rate seconds for a fixed time,
   however many are still in flight, and each latency counted from its scheduled start,
   so a slow platform shows as latency instead of as a slower schedule. `settle` then
   waits (bounded) for the webhooks of paid payments still in the pipeline, so a backlog
   left by overload does not spill into what is measured next.

A payment that fails, or whose webhook has not arrived within its time limit, counts as
incomplete: its latency is infinite, so a percentile that reaches it is reported as None.
`POST /v1/payments` waits up to the gateway's `payment_create_wait_ms` for the payment to
become payable; an answer in any other status (`received`, `awaiting_risk`, `submitting`)
means the wait ran out, and is counted before the client polls the payment (with a
growing interval) until it is payable.

The webhook receiver appends every delivery to a JSON-lines file; `WebhookTail` reads the
new lines every few milliseconds and wakes the payment waiting for each one. Every request
goes to 127.0.0.1; counts and times are bounded by the caller's arguments.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

CONNECTION_COUNT_MAX = 1_024
REQUEST_TIMEOUT_S = 30.0
TAIL_INTERVAL_S = 0.005
TAIL_READ_BYTES_MAX = 4 * 1024 * 1024
POLL_INTERVAL_S_FIRST = 0.05
POLL_INTERVAL_S_MAX = 0.5
SUCCEEDED_MARKER = b'"payment.succeeded"'
PAYABLE_STATUS = "requires_payment"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (which must not be empty)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def rounded_percentile(values: Sequence[float], fraction: float) -> float | None:
    """`percentile`, rounded; None when there are no values or it reaches an incomplete
    payment (an infinite latency)."""
    if not values:
        return None
    value = percentile(values, fraction)
    return round(value, 1) if math.isfinite(value) else None


@dataclass(frozen=True)
class Target:
    """Where the load goes: the platform's API and the demo merchant's key."""

    api_base_url: str
    api_key: str


@dataclass
class PaymentTiming:
    """One payment of the load. Times are wall-clock seconds (`time.time()`), the clock
    the webhook receiver stamps deliveries with."""

    started_at: float
    create_ms: float | None = None
    create_status: str | None = None
    payment_id: str | None = None
    paid: bool = False
    delivered_at: float | None = None
    error: str | None = None

    @property
    def latency_ms(self) -> float:
        if self.delivered_at is None:
            return math.inf
        return (self.delivered_at - self.started_at) * 1000


class WebhookTail:
    """Follows the receiver's JSON-lines log; tells when each payment's verified
    `payment.succeeded` webhook arrived."""

    def __init__(self, log_path: Path) -> None:
        self._path = log_path
        self._offset = 0
        self._partial = b""
        self._delivered: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}

    def read_new_lines(self) -> None:
        if not self._path.exists():
            return
        with self._path.open("rb") as log_file:
            log_file.seek(self._offset)
            data = log_file.read(TAIL_READ_BYTES_MAX)
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        # The last piece is a line the receiver is still writing (or empty).
        self._partial = lines.pop()
        for line in lines:
            # Most deliveries are other event types; skip them without parsing.
            if SUCCEEDED_MARKER in line:
                self._record(json.loads(line))

    def _record(self, record: dict[str, Any]) -> None:
        if not record["verified"] or record["type"] != "payment.succeeded":
            return
        payment_id = record["event"]["data"]["object"]["id"]
        if payment_id in self._delivered:
            return
        received_at = float(record["received_at"])
        self._delivered[payment_id] = received_at
        waiter = self._waiters.get(payment_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(received_at)

    async def follow(self, duration_s_max: float) -> None:
        """Read new lines every TAIL_INTERVAL_S until cancelled or `duration_s_max` ends."""
        deadline = time.monotonic() + duration_s_max
        while time.monotonic() < deadline:
            self.read_new_lines()
            await asyncio.sleep(TAIL_INTERVAL_S)

    async def delivered_at(self, payment_id: str, timeout_s: float) -> float | None:
        """When the payment's webhook arrived, waiting up to `timeout_s`; None if not."""
        if payment_id in self._delivered:
            return self._delivered[payment_id]
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[payment_id] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout=max(0.0, timeout_s))
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(payment_id, None)


def client_session() -> aiohttp.ClientSession:
    """One session for the whole load: pooled keep-alive connections to 127.0.0.1."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTION_COUNT_MAX, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def _payable(
    session: aiohttp.ClientSession, target: Target, payment: dict[str, Any], deadline: float
) -> dict[str, Any]:
    """The payment once it is payable or final, polling with a growing interval until
    `deadline` (monotonic seconds); as last seen otherwise."""
    interval_s = POLL_INTERVAL_S_FIRST
    headers = {"Authorization": f"Bearer {target.api_key}"}
    url = f"{target.api_base_url}/v1/payments/{payment['id']}"
    while payment["status"] in ("received", "awaiting_risk", "submitting"):
        if time.monotonic() + interval_s > deadline:
            break
        await asyncio.sleep(interval_s)
        interval_s = min(POLL_INTERVAL_S_MAX, interval_s * 2)
        async with session.get(url, headers=headers) as answer:
            # Before payment_center records it, the payment is not readable yet.
            if answer.status == 404:
                continue
            answer.raise_for_status()
            payment = await answer.json()
    return payment


async def one_payment(
    session: aiohttp.ClientSession,
    target: Target,
    webhooks: WebhookTail,
    timing: PaymentTiming,
    deadline: float,
) -> PaymentTiming:
    """Create, pay and await the webhook of one payment by `deadline` (monotonic seconds),
    filling in `timing` and returning it. Never raises for the platform's answers: a
    failure is recorded in the timing."""
    try:
        create_begin = time.perf_counter()
        async with session.post(
            f"{target.api_base_url}/v1/payments",
            headers={
                "Authorization": f"Bearer {target.api_key}",
                "Idempotency-Key": uuid.uuid4().hex,
            },
            json={
                "amount": 1999,
                "currency": "CNY",
                "channel": "alipay",
                "order_id": f"bench-{uuid.uuid4().hex[:12]}",
                "description": "bench",
            },
        ) as answer:
            answer.raise_for_status()
            payment = await answer.json()
        timing.create_ms = (time.perf_counter() - create_begin) * 1000
        timing.create_status = payment["status"]
        timing.payment_id = payment["id"]
        payment = await _payable(session, target, payment, deadline)
        if payment["status"] != PAYABLE_STATUS:
            timing.error = f"status {payment['status']}"
            return timing
        async with session.post(payment["next_action"]["url"]) as paid:
            paid.raise_for_status()
        timing.paid = True
        timing.delivered_at = await webhooks.delivered_at(
            payment["id"], deadline - time.monotonic()
        )
        if timing.delivered_at is None:
            timing.error = "no webhook in time"
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as error:
        timing.error = type(error).__name__
    return timing


def _payment_figures(timings: Sequence[PaymentTiming]) -> dict[str, Any]:
    """Latency and create figures of `timings` (incomplete payments count as infinite)."""
    latencies = [timing.latency_ms for timing in timings]
    creates = [timing.create_ms for timing in timings if timing.create_ms is not None]
    not_payable = Counter(
        timing.create_status
        for timing in timings
        if timing.create_status is not None and timing.create_status != PAYABLE_STATUS
    )
    return {
        "p50_ms": rounded_percentile(latencies, 0.50),
        "p95_ms": rounded_percentile(latencies, 0.95),
        "p99_ms": rounded_percentile(latencies, 0.99),
        "create_p50_ms": rounded_percentile(creates, 0.50),
        "create_p99_ms": rounded_percentile(creates, 0.99),
        "creates_not_payable": sum(not_payable.values()),
        "creates_not_payable_by_status": dict(not_payable),
        "incomplete": sum(timing.delivered_at is None for timing in timings),
        "errors": dict(Counter(timing.error for timing in timings if timing.error)),
    }


@dataclass
class _Window:
    """The measured window of a closed-loop point, opened once the point is warm."""

    begin: float | None = None
    end: float | None = None
    finished: int = 0


async def closed_loop_point(
    session: aiohttp.ClientSession,
    target: Target,
    webhooks: WebhookTail,
    in_flight: int,
    *,
    warmup_s: float,
    window_s: float,
    payment_count_max: int,
    payment_timeout_s: float,
) -> dict[str, Any]:
    """Keep `in_flight` payments in flight until the point is warm, then for `window_s`
    seconds (at most `payment_count_max` payments in all), then let those in flight
    finish (each within `payment_timeout_s`). See the module docstring for what counts.

    The point is warm once `warmup_s` has passed and as many payments have finished as
    are in flight: by then every slot has been through one whole payment, so the window
    does not measure the first wave arriving at an empty pipeline. That takes at most
    about `payment_timeout_s`, the longest one payment may take.
    """
    begin_monotonic, begin_wall = time.monotonic(), time.time()
    warm_by = begin_monotonic + warmup_s
    window = _Window()
    timings: list[PaymentTiming] = []
    cpu_begin = time.process_time()

    def open_window_if_warm() -> None:
        now = time.monotonic()
        if window.begin is None and now >= warm_by and window.finished >= in_flight:
            window.begin, window.end = time.time(), now + window_s

    async def slot() -> None:
        # The window opens within payment_timeout_s; this bounds a slot even if it did not.
        give_up = begin_monotonic + warmup_s + 2 * payment_timeout_s + window_s
        while len(timings) < payment_count_max and time.monotonic() < give_up:
            if window.end is not None and time.monotonic() >= window.end:
                return
            timing = PaymentTiming(started_at=time.time())
            timings.append(timing)
            await one_payment(
                session, target, webhooks, timing, time.monotonic() + payment_timeout_s
            )
            window.finished += 1
            open_window_if_warm()

    await asyncio.gather(*(slot() for _ in range(in_flight)))
    elapsed_s = time.monotonic() - begin_monotonic
    client_cpu_percent = (time.process_time() - cpu_begin) / elapsed_s * 100
    window_begin = window.begin if window.begin is not None else time.time()
    window_end = window_begin + window_s
    if len(timings) >= payment_count_max:
        # The count ran out before the time did: the window ends at the last start.
        window_end = min(window_end, max(timing.started_at for timing in timings))
    return {
        "in_flight": in_flight,
        **_window_figures(timings, window_begin, window_end),
        "warmup_s": round(window_begin - begin_wall, 2),
        "started": len(timings),
        "client_cpu_percent_of_core": round(client_cpu_percent, 1),
    }


def _window_figures(
    timings: Sequence[PaymentTiming], window_begin: float, window_end: float
) -> dict[str, Any]:
    """Throughput (webhooks received inside the window) and the figures of the payments
    started inside it."""
    window_s = max(window_end - window_begin, 1e-9)
    completed = sum(
        timing.delivered_at is not None and window_begin <= timing.delivered_at < window_end
        for timing in timings
    )
    started = [timing for timing in timings if window_begin <= timing.started_at < window_end]
    return {
        "payments_per_s": round(completed / window_s, 2),
        **_payment_figures(started),
        "window_s": round(window_s, 3),
        "started_in_window": len(started),
        "completed_in_window": completed,
    }


async def sweep(
    session: aiohttp.ClientSession,
    target: Target,
    webhooks: WebhookTail,
    in_flight_counts: Sequence[int],
    *,
    warmup_s: float,
    window_s: float,
    payment_count_max: int,
    payment_timeout_s: float,
) -> list[dict[str, Any]]:
    """One closed-loop point per in-flight count, in order."""
    points: list[dict[str, Any]] = []
    for in_flight in in_flight_counts:
        print(f"  {in_flight} payments in flight...", flush=True)
        points.append(
            await closed_loop_point(
                session,
                target,
                webhooks,
                in_flight,
                warmup_s=warmup_s,
                window_s=window_s,
                payment_count_max=payment_count_max,
                payment_timeout_s=payment_timeout_s,
            )
        )
    return points


async def open_loop(
    session: aiohttp.ClientSession,
    target: Target,
    webhooks: WebhookTail,
    *,
    rate_per_s: float,
    duration_s: float,
    payment_timeout_s: float,
) -> tuple[dict[str, Any], list[PaymentTiming]]:
    """Start one payment every 1/`rate_per_s` seconds for `duration_s` seconds, whatever
    is in flight; latencies from each scheduled start. Each payment has
    `payment_timeout_s` from its scheduled start to finish. Returns the figures and the
    payments."""
    count = max(1, round(rate_per_s * duration_s))
    interval_s = 1 / rate_per_s
    # Both clocks at one instant: the schedule runs on the monotonic one, latencies are
    # measured on the wall clock the receiver stamps deliveries with.
    first_monotonic, first_wall = time.monotonic() + 0.1, time.time() + 0.1
    tasks: list[asyncio.Task[PaymentTiming]] = []
    start_lag_s_max = 0.0
    for number in range(count):
        scheduled = first_monotonic + number * interval_s
        delay_s = scheduled - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        start_lag_s_max = max(start_lag_s_max, time.monotonic() - scheduled)
        tasks.append(
            asyncio.create_task(
                one_payment(
                    session,
                    target,
                    webhooks,
                    PaymentTiming(started_at=first_wall + number * interval_s),
                    scheduled + payment_timeout_s,
                )
            )
        )
    timings = list(await asyncio.gather(*tasks))
    delivered = [timing.delivered_at for timing in timings if timing.delivered_at is not None]
    last_delivered = max(delivered, default=first_wall)
    return {
        "offered_per_s": rate_per_s,
        "duration_s": duration_s,
        "started": count,
        "completed": len(delivered),
        "completed_per_s": round(len(delivered) / max(last_delivered - first_wall, 1e-9), 2),
        **_payment_figures(timings),
        "start_lag_ms_max": round(start_lag_s_max * 1000, 1),
    }, timings


async def settle(
    webhooks: WebhookTail, timings: Sequence[PaymentTiming], timeout_s: float
) -> dict[str, Any]:
    """Wait up to `timeout_s` for the webhooks of paid payments still without one, so
    that a backlog left by overload does not spill into what is measured next."""
    begin = time.monotonic()
    outstanding = [
        timing.payment_id
        for timing in timings
        if timing.paid and timing.delivered_at is None and timing.payment_id is not None
    ]
    undelivered = 0
    for payment_id in outstanding:
        remaining_s = begin + timeout_s - time.monotonic()
        if await webhooks.delivered_at(payment_id, remaining_s) is None:
            undelivered += 1
    return {
        "outstanding": len(outstanding),
        "undelivered": undelivered,
        "waited_s": round(time.monotonic() - begin, 2),
    }
