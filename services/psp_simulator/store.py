"""The PSP simulator's trades.

State is kept in memory by design for now: a restarted simulator forgets every trade,
which is what tests and local demos want, and the simulator stands in for an external
system whose durability is not payrail's concern. The store is bounded by
`trade_count_max` so a long-running simulator cannot grow without limit.

All methods are synchronous and never await, so within one asyncio event loop each call
is atomic without a lock.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from datetime import datetime

from services.common.invariant import invariant
from services.gateway.channels.alipay_protocol import (
    TRADE_STATUS_CLOSED,
    TRADE_STATUS_SUCCESS,
    TRADE_STATUS_WAIT_BUYER_PAY,
)


@dataclass(frozen=True)
class Trade:
    trade_no: str
    app_id: str
    out_trade_no: str
    total_amount_minor: int
    currency: str
    subject: str
    notify_url: str
    trade_status: str
    created_at: datetime
    gmt_payment: datetime | None = None


class TradeStoreError(Exception):
    """Base of the store's expected failures."""


class TradeConflict(TradeStoreError):
    """The out_trade_no already names a trade with another amount or currency."""


class TradeStoreFull(TradeStoreError):
    """The store holds trade_count_max trades and refuses new ones."""


class UnknownTrade(TradeStoreError):
    """No trade has this trade_no."""


class TradeNotPayable(TradeStoreError):
    """The trade is closed; a closed trade can no longer be paid."""


class TradeNotClosable(TradeStoreError):
    """The trade is paid; a paid trade can no longer be closed."""


def new_trade_no(now: datetime) -> str:
    """Return an Alipay-looking trade number: the UTC date then 20 random digits."""
    return f"{now:%Y%m%d}{secrets.randbelow(10**20):020d}"


class TradeStore:
    def __init__(self, trade_count_max: int) -> None:
        invariant(trade_count_max > 0, "trade_count_max must be positive")
        self._trade_count_max = trade_count_max
        self._by_trade_no: dict[str, Trade] = {}
        self._trade_no_by_out_trade_no: dict[tuple[str, str], str] = {}

    def precreate(
        self,
        *,
        app_id: str,
        out_trade_no: str,
        total_amount_minor: int,
        currency: str,
        subject: str,
        notify_url: str,
        now: datetime,
    ) -> Trade:
        """Create the trade, or return the existing one for the same app and out_trade_no.

        Raises TradeConflict when the existing trade has another amount or currency, and
        TradeStoreFull when a new trade would exceed trade_count_max.
        """
        existing = self.find_by_out_trade_no(app_id, out_trade_no)
        if existing is not None:
            if (existing.total_amount_minor, existing.currency) != (total_amount_minor, currency):
                raise TradeConflict(
                    f"out_trade_no {out_trade_no} exists with "
                    f"{existing.total_amount_minor} {existing.currency}"
                )
            return existing
        if len(self._by_trade_no) >= self._trade_count_max:
            raise TradeStoreFull(f"the simulator holds {self._trade_count_max} trades")
        trade = Trade(
            trade_no=new_trade_no(now),
            app_id=app_id,
            out_trade_no=out_trade_no,
            total_amount_minor=total_amount_minor,
            currency=currency,
            subject=subject,
            notify_url=notify_url,
            trade_status=TRADE_STATUS_WAIT_BUYER_PAY,
            created_at=now,
        )
        invariant(trade.trade_no not in self._by_trade_no, "trade_no collision")
        self._by_trade_no[trade.trade_no] = trade
        self._trade_no_by_out_trade_no[(app_id, out_trade_no)] = trade.trade_no
        return trade

    def find_by_trade_no(self, trade_no: str) -> Trade | None:
        return self._by_trade_no.get(trade_no)

    def find_by_out_trade_no(self, app_id: str, out_trade_no: str) -> Trade | None:
        trade_no = self._trade_no_by_out_trade_no.get((app_id, out_trade_no))
        return None if trade_no is None else self._by_trade_no[trade_no]

    def pay(self, trade_no: str, now: datetime) -> tuple[Trade, bool]:
        """Mark the trade paid; return it and whether this call was the one that paid it.

        Paying a paid trade again changes nothing and returns False. Raises UnknownTrade
        and TradeNotPayable.
        """
        trade = self._by_trade_no.get(trade_no)
        if trade is None:
            raise UnknownTrade(trade_no)
        if trade.trade_status == TRADE_STATUS_SUCCESS:
            return trade, False
        if trade.trade_status != TRADE_STATUS_WAIT_BUYER_PAY:
            raise TradeNotPayable(f"trade {trade_no} is {trade.trade_status}")
        paid = dataclasses.replace(trade, trade_status=TRADE_STATUS_SUCCESS, gmt_payment=now)
        self._by_trade_no[trade_no] = paid
        return paid, True

    def close(self, app_id: str, out_trade_no: str) -> tuple[Trade, bool]:
        """Close a trade still waiting for payment; return it and whether this call closed it.

        Closing a closed trade again changes nothing and returns False. Raises UnknownTrade
        and TradeNotClosable.
        """
        trade = self.find_by_out_trade_no(app_id, out_trade_no)
        if trade is None:
            raise UnknownTrade(out_trade_no)
        if trade.trade_status == TRADE_STATUS_CLOSED:
            return trade, False
        if trade.trade_status == TRADE_STATUS_SUCCESS:
            raise TradeNotClosable(f"trade {trade.trade_no} is already paid")
        invariant(
            trade.trade_status == TRADE_STATUS_WAIT_BUYER_PAY,
            f"trade {trade.trade_no} has unknown status {trade.trade_status}",
        )
        closed = dataclasses.replace(trade, trade_status=TRADE_STATUS_CLOSED)
        self._by_trade_no[trade.trade_no] = closed
        return closed, True
