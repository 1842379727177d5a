"""Payer notice senders that tests plug in through `PAYRAIL_PAYER_NOTICE_SENDER`."""

from __future__ import annotations

from services.notifier.payer_notices import PayerNotice


class FlakySender:
    """Fails the first attempt at every notice (an SMS gateway that is down), then keeps
    each notice it is given in `sent`."""

    def __init__(self) -> None:
        self.sent: list[PayerNotice] = []
        self.attempts: dict[str, int] = {}

    async def send(self, notice: PayerNotice) -> None:
        self.attempts[notice.notice_id] = self.attempts.get(notice.notice_id, 0) + 1
        if self.attempts[notice.notice_id] == 1:
            raise ConnectionError("SMS gateway is down")
        self.sent.append(notice)


FLAKY = FlakySender()


class NotASender:
    """Has no `send`: loading it must fail."""


def make_flaky_sender() -> FlakySender:
    return FlakySender()
