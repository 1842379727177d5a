"""What every simulated channel shares: settings, clock, fault board and the sender of
asynchronous notifications (which exists only while the app's lifespan runs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.clock import Clock
from services.common.invariant import InvariantViolation
from services.psp_simulator.faults import FaultBoard
from services.psp_simulator.notifier import NotificationSender
from services.psp_simulator.settings import PspSimulatorSettings


@dataclass
class SimulatorContext:
    settings: PspSimulatorSettings
    clock: Clock
    faults: FaultBoard
    sender: NotificationSender | None = field(default=None)

    def running_sender(self) -> NotificationSender:
        """The notification sender; raises InvariantViolation outside the lifespan."""
        if self.sender is None:
            raise InvariantViolation("a notification was sent before the app's lifespan started")
        return self.sender
