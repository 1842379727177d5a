"""The launcher supervises its processes: one killed without warning is restarted and the
platform works again; a second launch on taken ports stops before starting anything."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from services.common.launcher import (
    LauncherSettings,
    Platform,
    PortsInUseError,
    ports_in_use,
)
from services.common.settings import ServiceSettings
from tests.e2e.helpers import eventually, new_payment

# Long enough for the restarted process to migrate, join its consumer group (the killed
# member holds its partitions until its session times out) and answer /readyz.
RESTART_DEADLINE_S = 90.0
# The command imports the whole platform; on a busy machine that alone can take seconds.
CLI_TIMEOUT_S = 120.0


def test_a_killed_service_process_is_restarted_and_payments_succeed_again(
    platform: Platform, api: httpx.Client
) -> None:
    killed_pid = platform.pid_of("payment_center")
    os.kill(killed_pid, signal.SIGKILL)
    console: list[str] = []

    def ready_again() -> bool:
        console.extend(platform.supervise_once())
        return any(
            re.match(r"payment_center is ready again \(restart #\d+\)", line) for line in console
        )

    eventually(ready_again, timeout_s=RESTART_DEADLINE_S, what="payment_center ready again")
    assert re.match(
        r"payment_center exited with code -9 \(SIGKILL\); restarting in 1\.0 s \(restart #1\); "
        r"its log: .*payment_center\.log$",
        console[0],
    ), console
    # Only the killed process was restarted.
    assert [line.split()[0] for line in console] == ["payment_center", "payment_center"], console
    assert platform.pid_of("payment_center") != killed_pid

    created = api.post(
        "/v1/payments", json=new_payment(), headers={"Idempotency-Key": os.urandom(8).hex()}
    )
    assert created.status_code == 201, created.text
    payment_id = created.json()["id"]

    def prepared_at_the_channel() -> dict[str, Any] | None:
        # The answer may come before the restarted payment_center has rejoined its consumer
        # group; the payment then reaches the channel moments later.
        body: dict[str, Any] = api.get(f"/v1/payments/{payment_id}").json()
        return body if body["status"] == "requires_payment" else None

    payment = eventually(
        prepared_at_the_channel, timeout_s=RESTART_DEADLINE_S, what="payment sent to channel"
    )
    assert httpx.post(payment["next_action"]["url"], timeout=5).status_code == 200

    def succeeded() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/v1/payments/{payment_id}").json()
        return body if body["status"] == "succeeded" else None

    eventually(succeeded, timeout_s=RESTART_DEADLINE_S, what="payment succeeded after restart")
    assert platform.supervise_once() == []


class FakeMonotonic:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_a_process_that_keeps_exiting_waits_longer_each_time_until_it_stayed_up_a_while(
    tmp_path: Path,
) -> None:
    clock = FakeMonotonic()
    settings = LauncherSettings(
        state_dir=tmp_path,
        restart_backoff_initial_s=1.0,
        restart_backoff_s_max=3.0,
        restart_healthy_after_s=60.0,
    )
    with Platform(settings, ServiceSettings(), monotonic=clock) as platform:
        # A module that does not exist: the interpreter exits with code 1 at once.
        platform._spawn("crasher", "payrail_no_such_module", {})

        def next_exit() -> str:
            lines: list[str] = eventually(platform.supervise_once, timeout_s=30, what="exit")
            assert len(lines) == 1, lines
            return lines[0]

        planned = []
        for _ in range(4):
            planned.append(next_exit())
            clock.now_s += 3.0  # the longest wait has passed: the next round restarts it
            assert platform.supervise_once() == []
        # This time it counts as having stayed up for a minute before it exited.
        clock.now_s += 60.0
        planned.append(next_exit())
    waits = [re.findall(r"restarting in (\S+) s \(restart #(\d+)\)", line) for line in planned]
    assert waits == [
        [("1.0", "1")],
        [("2.0", "2")],
        [("3.0", "3")],
        [("3.0", "4")],
        [("1.0", "5")],
    ]
    assert all(line.startswith("crasher exited with code 1; ") for line in planned), planned


def test_a_launch_on_a_taken_port_names_the_port_and_its_holder_and_starts_nothing(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port: int = held.getsockname()[1]
        settings = LauncherSettings.on_free_ports(tmp_path / "state").model_copy(
            update={"gateway_port": port}
        )

        taken = ports_in_use(settings)
        assert [(t.port, t.needed_by, t.holder_pid) for t in taken] == [
            (port, "gateway", os.getpid())
        ]
        described = (
            f"port {port} (gateway, PAYRAIL_GATEWAY_PORT) is in use by process {os.getpid()}"
        )
        assert described in str(PortsInUseError(taken))

        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("PAYRAIL_")
            and name not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
        }
        environment["PAYRAIL_STATE_DIR"] = str(settings.state_dir)
        for field_name in LauncherSettings.model_fields:
            if field_name.endswith("_port"):
                environment[f"PAYRAIL_{field_name.upper()}"] = str(getattr(settings, field_name))
        launched = subprocess.run(
            [str(Path(sys.executable).with_name("payrail")), "run"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
    assert launched.returncode == 1, (launched.stdout, launched.stderr)
    assert described in launched.stderr, launched.stderr
    assert "Traceback" not in launched.stderr
    # Nothing started: no broker, database or service, not even the state directory.
    assert "Starting payrail" not in launched.stdout
    assert not settings.state_dir.exists()
