"""What a pure `decide` function returns.

Domain modules build `Decision`s from the contracts in `schemas`; only
`services.common.event_store.record_decision` (an I/O edge) wraps them in envelopes and
writes them to the event store and outbox, inside the caller's transaction. This module
stays free of I/O imports so domain modules may use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import Command, Event
from schemas.envelope import Contract


@dataclass(frozen=True)
class Emit:
    """An event the aggregate records about itself."""

    event_type: type[Event]
    payload: Contract


@dataclass(frozen=True)
class Send:
    """A command for the service that owns `aggregate_id`."""

    command_type: type[Command]
    payload: Contract
    aggregate_id: str


@dataclass(frozen=True)
class Decision:
    events: tuple[Emit, ...] = ()
    commands: tuple[Send, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.events and not self.commands


NOTHING = Decision()
