"""The fault suite: money-safety scenarios against the real broker, PostgreSQL, PSP
simulator and service processes. Each scenario counts what went wrong with the money it
moved: `lost` (money taken or owed that payrail does not record), `doubled` (recorded or
paid twice) and `stuck` (not in a final state when the scenario ends). Every count must be
zero; the table of counts is printed at the end of the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import (  # noqa: F401 (fixtures shared with the e2e tests)
    api,
    info,
    ops_receiver,
    platform,
    psp_faults,
)
from tests.integration.conftest import http_client  # noqa: F401 (shared fixture)

# Short enough that six calls without an answer fit in a scenario.
CHANNEL_TIMEOUT_MS = 1_000


@dataclass(frozen=True)
class Tally:
    scenario: str
    lost: int
    doubled: int
    stuck: int
    note: str = ""

    @property
    def clean(self) -> bool:
        return self.lost == self.doubled == self.stuck == 0


TALLIES: list[Tally] = []


@pytest.fixture(scope="package")
def extra_platform_env() -> dict[str, str]:
    return {"PAYRAIL_CHANNEL_TIMEOUT_MS": str(CHANNEL_TIMEOUT_MS)}


@pytest.fixture
def tally() -> Iterator[list[Tally]]:
    """Record a scenario's counts (the test asserts them too)."""
    recorded: list[Tally] = []
    yield recorded
    TALLIES.extend(recorded)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLIES:
        return
    width = max(len(entry.scenario) for entry in TALLIES)
    terminalreporter.section("money under faults")
    terminalreporter.write_line(f"{'scenario':<{width}}  lost  doubled  stuck  note")
    for entry in TALLIES:
        terminalreporter.write_line(
            f"{entry.scenario:<{width}}  {entry.lost:>4}  {entry.doubled:>7}  {entry.stuck:>5}"
            f"  {entry.note}"
        )
