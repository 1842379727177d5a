"""CPU and memory of a running platform's processes, read with psutil.

`Platform` (services/common/launcher.py) keeps its processes in private attributes:
`_processes` (name, Popen) for the services, the PSP simulator and the demo receiver,
`_broker` for the embedded broker and `_postgres` for the embedded PostgreSQL's handle.
This module only reads them, so the launcher needs no accessor for the benchmark.

The demo receiver stands for the merchant, not for the platform: its figures are
reported beside the platform's, not in them. PostgreSQL counts when the launcher started
it (no DATABASE_URL); a server named by DATABASE_URL is not the platform's, and other
databases on it may be busy.

CPU time of a process tree over an interval: for every process of the tree, user +
system time plus the time of its children that have exited and been waited for
(`children_user`, `children_system`), summed at the end minus the same sum at the start,
keyed by pid and creation time. A process that exits inside the interval moves its time
into its parent's children fields, so nothing is lost or counted twice (a PostgreSQL
backend or autovacuum worker that comes and goes is counted by the postmaster).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from services.common.launcher import Platform

DEMO_RECEIVER = "demo_receiver"
BROKER = "broker"
POSTGRES = "postgres"
IDLE_S_MAX = 600.0
BYTES_PER_MB = 1024 * 1024

ProcessKey = tuple[int, float]


@dataclass(frozen=True)
class PlatformProcess:
    name: str
    process: psutil.Process
    counted_in_platform: bool


def _embedded_postgres_pid(handle: object) -> int | None:
    """The postmaster's pid of the launcher's embedded PostgreSQL (pgserver), if any."""
    get_pid = getattr(handle, "get_pid", None)
    if handle is None or not callable(get_pid):
        return None
    pid = get_pid()
    return pid if isinstance(pid, int) else None


def platform_processes(running: Platform) -> list[PlatformProcess]:
    """The root process of every part of `running` (read from its private attributes)."""
    roots = [
        PlatformProcess(name, psutil.Process(popen.pid), name != DEMO_RECEIVER)
        for name, popen in running._processes
    ]
    if running._broker is not None:
        roots.append(PlatformProcess(BROKER, psutil.Process(running._broker.pid), True))
    postgres_pid = _embedded_postgres_pid(running._postgres)
    if postgres_pid is not None:
        roots.append(PlatformProcess(POSTGRES, psutil.Process(postgres_pid), True))
    return roots


def _tree(root: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [root, *root.children(recursive=True)]
    return []


def _tree_cpu_s(root: psutil.Process) -> dict[ProcessKey, float]:
    """CPU seconds so far of every process of `root`'s tree, with its waited-for children."""
    seconds: dict[ProcessKey, float] = {}
    for process in _tree(root):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            seconds[(process.pid, process.create_time())] = float(total)
    return seconds


def _cpu_percent(
    start: Mapping[ProcessKey, float], end: Mapping[ProcessKey, float], elapsed_s: float
) -> float:
    return (sum(end.values()) - sum(start.values())) / elapsed_s * 100


def measure_idle_cpu(processes: list[PlatformProcess], idle_s: float) -> dict[str, Any]:
    """CPU of `processes` (and their descendants) while nothing is asked of them for
    `idle_s` seconds, in percent of one core. Raises ValueError outside 0 < idle_s <= 600."""
    if not 0 < idle_s <= IDLE_S_MAX:
        raise ValueError(f"idle_s must be within (0, {IDLE_S_MAX}]")
    start = {entry.name: _tree_cpu_s(entry.process) for entry in processes}
    begin = time.monotonic()
    time.sleep(idle_s)
    elapsed_s = time.monotonic() - begin
    end = {entry.name: _tree_cpu_s(entry.process) for entry in processes}
    by_process = {
        entry.name: round(_cpu_percent(start[entry.name], end[entry.name], elapsed_s), 2)
        for entry in processes
    }
    counted = [entry.name for entry in processes if entry.counted_in_platform]
    return {
        "idle_s": round(elapsed_s, 2),
        "cpu_percent_of_core": round(sum(by_process[name] for name in counted), 2),
        "by_process": by_process,
        "counted": counted,
        "postgres_counted": POSTGRES in counted,
    }


def resident_memory_mb(processes: list[PlatformProcess]) -> dict[str, float]:
    """Resident memory of each service process and its descendants, in MB.

    PostgreSQL is left out: every backend maps the shared buffers, so adding their
    resident sizes counts the same pages many times over.
    """
    memory: dict[str, float] = {}
    for entry in processes:
        if entry.name == POSTGRES:
            continue
        resident_bytes = 0
        for process in _tree(entry.process):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                resident_bytes += int(process.memory_info().rss)
        memory[entry.name] = round(resident_bytes / BYTES_PER_MB, 1)
    return memory
