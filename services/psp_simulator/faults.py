"""Fault injection per channel: what the simulator does wrong on purpose.

Operators and tests switch faults at run time through `PUT /_sim/faults/{channel}`; every
channel starts with the faults the settings give (none by default). The board is plain
in-memory state of the one simulator process.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Channel

# The bank rail that pays merchants out has faults of its own, next to the channels'.
BANK_RAIL: Final = "bank"
Rail = Channel | Literal["bank"]
RAILS: Final[tuple[Rail, ...]] = (*Channel, BANK_RAIL)

# Path prefixes of each rail's merchant-facing API, so one middleware can apply a rail's
# latency and outage to every route of that rail.
CHANNEL_PATH_PREFIXES: Final[dict[Rail, str]] = {
    Channel.ALIPAY: "/alipay/",
    Channel.WECHAT_PAY: "/wechatpay/",
    Channel.CARD: "/card/",
    BANK_RAIL: "/bank/",
}
LATENCY_MS_MAX: Final = 30_000
ANSWERS_AFTER_WORK_MAX: Final = 20


class ChannelFaults(BaseModel):
    """The faults of one channel. Every field defaults to "behave"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unavailable: bool = Field(
        default=False, description="Every API call of the channel answers HTTP 503."
    )
    latency_ms: int = Field(
        default=0, ge=0, le=LATENCY_MS_MAX, description="Delay before every API answer."
    )
    decline_payments: bool = Field(
        default=False, description="New payments are refused (a card decline, a refused trade)."
    )
    lose_notifications: bool = Field(
        default=False, description="No notification is sent; only a query finds the result."
    )
    duplicate_notifications: bool = Field(
        default=False,
        description="After a notification is acknowledged, the same fact is sent again "
        "under a new notification id.",
    )
    out_of_order_notifications: bool = Field(
        default=False,
        description="An earlier status (e.g. waiting for the payer) is notified after the "
        "final one.",
    )
    notification_delay_ms: int = Field(
        default=0,
        ge=0,
        le=LATENCY_MS_MAX,
        description="Delay before a payment's notification is first sent (a late notice).",
    )
    fail_refunds: bool = Field(default=False, description="Refunds are accepted, then end failed.")
    fail_payouts: bool = Field(
        default=False, description="Bank rail only: payouts are accepted, then end failed."
    )
    answers_after_work: tuple[Annotated[int, Field(ge=400, le=599)], ...] = Field(
        default=(),
        max_length=ANSWERS_AFTER_WORK_MAX,
        description="The next POSTs to the rail's API do their work (a trade, refund or "
        "payout is created or found again as usual), then answer with these HTTP statuses "
        "in turn instead of their own answer: the request reached the rail, but the caller "
        "is told otherwise, e.g. [429, 503]. Setting the faults again starts the list anew.",
    )


class FaultBoard:
    """The current faults of every channel and of the bank rail."""

    def __init__(self, initial: ChannelFaults | None = None) -> None:
        self._initial = initial or ChannelFaults()
        self._faults: dict[Rail, ChannelFaults] = {}
        # How many of each rail's `answers_after_work` were given since its faults were set.
        self._answers_given: dict[Rail, int] = {}

    def of(self, rail: Rail) -> ChannelFaults:
        return self._faults.get(rail, self._initial)

    def set(self, rail: Rail, faults: ChannelFaults) -> None:
        self._faults[rail] = faults
        self._answers_given.pop(rail, None)

    def reset(self) -> None:
        self._faults.clear()
        self._answers_given.clear()

    def take_answer_after_work(self, rail: Rail) -> int | None:
        """The status the next POST to `rail` answers after doing its work, if any is left."""
        given = self._answers_given.get(rail, 0)
        answers = self.of(rail).answers_after_work
        if given >= len(answers):
            return None
        self._answers_given[rail] = given + 1
        return answers[given]

    def snapshot(self) -> dict[str, ChannelFaults]:
        return {str(rail): self.of(rail) for rail in RAILS}


def rail_named(name: str) -> Rail | None:
    """The channel or the bank rail called `name`, if there is one."""
    if name == BANK_RAIL:
        return BANK_RAIL
    try:
        return Channel(name)
    except ValueError:
        return None


def channel_of_path(path: str) -> Rail | None:
    """The channel (or bank rail) whose merchant-facing API serves `path`, if any."""
    for channel, prefix in CHANNEL_PATH_PREFIXES.items():
        if path.startswith(prefix):
            return channel
    return None
