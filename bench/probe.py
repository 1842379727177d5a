"""One closed-loop point and where its CPU went: the tool for before/after comparisons.

    python -m bench.probe --in-flight 48 --window-s 20 [--profile-dir DIR] [--out FILE]

Starts the platform from this checkout on free ports (embedded broker; DATABASE_URL,
else PostgreSQL on 127.0.0.1:5432, else an embedded pgserver), warms it up, runs one
closed-loop point (bench/end_to_end.py) and prints payments/s, the latencies, and the CPU
each process spent per completed payment over the point. With `--profile-dir`, py-spy
(`pip install py-spy`) samples every service process during the point and writes one
collapsed-stack file per process there.

Paired comparison of two commits, as the README's benchmark tables were measured: check
the older commit out beside this one (`git worktree add ../base <commit>`), copy this
file into its `bench/` if it lacks it, and run the probe in each tree alternately, two or
three times each, on an otherwise idle machine. Only the medians of alternating runs are
worth comparing: the spread between single runs here is 10-20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.end_to_end import Target, WebhookTail, client_session, closed_loop_point
from bench.platform_processes import _tree_cpu_s, platform_processes
from services.common.launcher import LauncherSettings, Platform, PlatformInfo
from services.common.settings import ServiceSettings

WARMUP_PAYMENT_COUNT = 20
PAYMENT_TIMEOUT_S = 60.0
PAYMENT_COUNT_MAX = 20_000
PROFILE_RATE_HZ = 97


async def _point(info: PlatformInfo, in_flight: int, window_s: float) -> dict[str, Any]:
    assert info.demo_api_key is not None and info.demo_webhook_log is not None
    target = Target(api_base_url=info.api_base_url, api_key=info.demo_api_key)
    webhooks = WebhookTail(info.demo_webhook_log)
    follower = asyncio.create_task(webhooks.follow(window_s + 10 * PAYMENT_TIMEOUT_S))
    try:
        async with client_session() as session:
            await closed_loop_point(
                session,
                target,
                webhooks,
                min(in_flight, WARMUP_PAYMENT_COUNT),
                warmup_s=0.0,
                window_s=1.0,
                payment_count_max=WARMUP_PAYMENT_COUNT,
                payment_timeout_s=PAYMENT_TIMEOUT_S,
            )
            return await closed_loop_point(
                session,
                target,
                webhooks,
                in_flight,
                warmup_s=2.0,
                window_s=window_s,
                payment_count_max=PAYMENT_COUNT_MAX,
                payment_timeout_s=PAYMENT_TIMEOUT_S,
            )
    finally:
        follower.cancel()


def _start_profilers(running: Platform, directory: Path, duration_s: float) -> list[Any]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile-dir needs py-spy on PATH (pip install py-spy)")
    directory.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                py_spy,
                "record",
                "--format",
                "raw",
                "--rate",
                str(PROFILE_RATE_HZ),
                "--duration",
                str(int(duration_s)),
                "--pid",
                str(entry.process.pid),
                "--output",
                str(directory / f"{entry.name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for entry in platform_processes(running)
        if entry.name not in ("broker", "postgres")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in-flight", type=int, default=48)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--profile-dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the report (JSON) here")
    arguments = parser.parse_args()
    if not 1 <= arguments.in_flight <= 1024 or not 1 <= arguments.window_s <= 600:
        parser.error("--in-flight must be 1..1024 and --window-s 1..600")
    state_dir = Path(tempfile.mkdtemp(prefix="payrail-probe-"))
    launcher = LauncherSettings.on_free_ports(state_dir)
    with Platform(launcher, ServiceSettings(kafka_topic_prefix="probe.")) as running:
        info = running.start()
        processes = platform_processes(running)
        # CPU is read over the whole point (its warm-up included) and divided by every
        # payment that finished in it, so the per-payment figure covers the same span.
        cpu_begin = {entry.name: _tree_cpu_s(entry.process) for entry in processes}
        profilers = (
            _start_profilers(running, arguments.profile_dir, arguments.window_s + 5)
            if arguments.profile_dir
            else []
        )
        began = time.monotonic()
        point = asyncio.run(_point(info, arguments.in_flight, arguments.window_s))
        elapsed_s = time.monotonic() - began
        cpu_end = {entry.name: _tree_cpu_s(entry.process) for entry in processes}
        for profiler in profilers:
            profiler.wait(timeout=120)
    finished = max(point["started"], 1)
    cpu_ms_per_payment = {
        name: round(
            (sum(cpu_end[name].values()) - sum(cpu_begin[name].values())) / finished * 1000, 2
        )
        for name in cpu_begin
    }
    report = {
        **point,
        "elapsed_s": round(elapsed_s, 1),
        "cpu_ms_per_payment": cpu_ms_per_payment,
        "cpu_ms_per_payment_platform": round(
            sum(ms for name, ms in cpu_ms_per_payment.items() if name != "demo_receiver"), 2
        ),
    }
    text = json.dumps(report, indent=2)
    if arguments.out is not None:
        arguments.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
