"""The PSP simulator's trades and their refunds.

State is kept in memory by design for now: a restarted simulator forgets every trade,
which is what tests and local demos want, and the simulator stands in for an external
system whose durability is not payrail's concern. The store keeps at most
`trade_count_max` trades and at most as many refunds, so a long-running simulator cannot
grow without limit.

All methods are synchronous and never await, so within one asyncio event loop each call
is atomic without a lock.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from services.common.invariant import invariant
from services.gateway.channels.alipay_protocol import (
    REFUND_STATUS_FAIL,
    REFUND_STATUS_PROCESSING,
    REFUND_STATUS_SUCCESS,
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


@dataclass(frozen=True)
class Refund:
    """One refund of a paid trade, identified by the merchant's `out_request_no`.

    `fails` is decided when the refund is accepted (the `fail_refunds` fault): the refund
    stays REFUND_PROCESSING until it is finished, then becomes REFUND_FAIL when `fails`,
    REFUND_SUCCESS otherwise. A failed refund no longer counts against the paid total.
    """

    refund_no: str
    app_id: str
    out_request_no: str
    trade_no: str
    out_trade_no: str
    refund_amount_minor: int
    currency: str
    refund_reason: str
    notify_url: str
    fails: bool
    refund_status: str
    created_at: datetime
    gmt_refund: datetime | None = None
    fail_reason: str = ""


class TradeStoreError(Exception):
    """Base of the store's expected failures."""


class TradeConflict(TradeStoreError):
    """The out_trade_no already names a trade with another amount or currency."""


class TradeStoreFull(TradeStoreError):
    """The store holds trade_count_max trades (or refunds) and refuses new ones."""


class UnknownTrade(TradeStoreError):
    """No trade has this trade_no."""


class TradeNotPayable(TradeStoreError):
    """The trade is closed; a closed trade can no longer be paid."""


class TradeNotClosable(TradeStoreError):
    """The trade is paid; a paid trade can no longer be closed."""


class TradeNotRefundable(TradeStoreError):
    """The trade is not paid (waiting for the payer, or closed): there is nothing to refund."""


class RefundConflict(TradeStoreError):
    """The out_request_no already names a refund of another trade, amount or currency."""


class RefundCurrencyMismatch(TradeStoreError):
    """The refund's currency is not the trade's."""


class RefundAmountExceeded(TradeStoreError):
    """The refund plus the trade's refunds processing or succeeded exceeds the paid total."""


class UnknownRefund(TradeStoreError):
    """No refund has this refund_no."""


# Why a refund failed, as the simulator reports it when the `fail_refunds` fault is on.
REFUND_FAIL_REASON: Final = "the payer's account could not take the money back"


def new_trade_no(now: datetime) -> str:
    """Return an Alipay-looking trade number: the UTC date then 20 random digits."""
    return f"{now:%Y%m%d}{secrets.randbelow(10**20):020d}"


def new_refund_no(now: datetime) -> str:
    """Return a refund number: `R`, the UTC date, then 20 random digits."""
    return f"R{now:%Y%m%d}{secrets.randbelow(10**20):020d}"


class TradeStore:
    def __init__(self, trade_count_max: int) -> None:
        invariant(trade_count_max > 0, "trade_count_max must be positive")
        self._trade_count_max = trade_count_max
        self._by_trade_no: dict[str, Trade] = {}
        self._trade_no_by_out_trade_no: dict[tuple[str, str], str] = {}
        self._refunds_by_refund_no: dict[str, Refund] = {}
        self._refund_no_by_out_request_no: dict[tuple[str, str], str] = {}
        self._refund_nos_by_trade_no: dict[str, list[str]] = {}

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

    def refund(
        self,
        *,
        app_id: str,
        out_trade_no: str,
        out_request_no: str,
        refund_amount_minor: int,
        currency: str,
        refund_reason: str,
        notify_url: str,
        fails: bool,
        now: datetime,
    ) -> tuple[Refund, bool]:
        """Accept a refund of a paid trade; return it and whether this call created it.

        Idempotent by (app_id, out_request_no): the same trade, amount and currency return
        the existing refund, whatever its status, and False. Raises RefundConflict when
        the out_request_no names a refund of another trade, amount or currency;
        UnknownTrade; TradeNotRefundable when the trade is not paid;
        RefundCurrencyMismatch; RefundAmountExceeded when the refunds processing or
        succeeded would exceed the paid total; TradeStoreFull beyond trade_count_max
        refunds.
        """
        invariant(refund_amount_minor > 0, "refund_amount_minor must be positive")
        existing = self.find_refund(app_id, out_request_no)
        if existing is not None:
            if (existing.out_trade_no, existing.refund_amount_minor, existing.currency) != (
                out_trade_no,
                refund_amount_minor,
                currency,
            ):
                raise RefundConflict(
                    f"out_request_no {out_request_no} exists for trade {existing.out_trade_no} "
                    f"with {existing.refund_amount_minor} {existing.currency}"
                )
            return existing, False
        trade = self.find_by_out_trade_no(app_id, out_trade_no)
        if trade is None:
            raise UnknownTrade(out_trade_no)
        if trade.trade_status != TRADE_STATUS_SUCCESS:
            raise TradeNotRefundable(f"trade {trade.trade_no} is {trade.trade_status}")
        if currency != trade.currency:
            raise RefundCurrencyMismatch(
                f"trade {trade.trade_no} is in {trade.currency}, not {currency}"
            )
        committed_minor = self.committed_refund_minor(trade.trade_no)
        if committed_minor + refund_amount_minor > trade.total_amount_minor:
            raise RefundAmountExceeded(
                f"trade {trade.trade_no} paid {trade.total_amount_minor} and has "
                f"{committed_minor} refunded or being refunded; {refund_amount_minor} more "
                "exceeds it"
            )
        if len(self._refunds_by_refund_no) >= self._trade_count_max:
            raise TradeStoreFull(f"the simulator holds {self._trade_count_max} refunds")
        refund = Refund(
            refund_no=new_refund_no(now),
            app_id=app_id,
            out_request_no=out_request_no,
            trade_no=trade.trade_no,
            out_trade_no=out_trade_no,
            refund_amount_minor=refund_amount_minor,
            currency=currency,
            refund_reason=refund_reason,
            notify_url=notify_url,
            fails=fails,
            refund_status=REFUND_STATUS_PROCESSING,
            created_at=now,
        )
        invariant(refund.refund_no not in self._refunds_by_refund_no, "refund_no collision")
        self._refunds_by_refund_no[refund.refund_no] = refund
        self._refund_no_by_out_request_no[(app_id, out_request_no)] = refund.refund_no
        self._refund_nos_by_trade_no.setdefault(trade.trade_no, []).append(refund.refund_no)
        return refund, True

    def committed_refund_minor(self, trade_no: str) -> int:
        """The sum of the trade's refunds that are processing or succeeded: failed refunds
        gave their amount back, so it can be refunded again."""
        refunds = (
            self._refunds_by_refund_no[refund_no]
            for refund_no in self._refund_nos_by_trade_no.get(trade_no, ())
        )
        return sum(
            refund.refund_amount_minor
            for refund in refunds
            if refund.refund_status != REFUND_STATUS_FAIL
        )

    def find_refund(self, app_id: str, out_request_no: str) -> Refund | None:
        refund_no = self._refund_no_by_out_request_no.get((app_id, out_request_no))
        return None if refund_no is None else self._refunds_by_refund_no[refund_no]

    def finish_refund(self, refund_no: str, now: datetime) -> tuple[Refund, bool]:
        """End a processing refund (failed when it `fails`, succeeded otherwise); return it
        and whether this call finished it. Finishing a finished refund changes nothing and
        returns False. Raises UnknownRefund."""
        refund = self._refunds_by_refund_no.get(refund_no)
        if refund is None:
            raise UnknownRefund(refund_no)
        if refund.refund_status != REFUND_STATUS_PROCESSING:
            return refund, False
        if refund.fails:
            finished = dataclasses.replace(
                refund,
                refund_status=REFUND_STATUS_FAIL,
                gmt_refund=now,
                fail_reason=REFUND_FAIL_REASON,
            )
        else:
            finished = dataclasses.replace(
                refund, refund_status=REFUND_STATUS_SUCCESS, gmt_refund=now
            )
        self._refunds_by_refund_no[refund_no] = finished
        return finished, True
