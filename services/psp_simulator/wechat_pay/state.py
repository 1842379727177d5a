"""The WeChat-Pay-style channel's state and behaviour, independent of HTTP: trades and
refunds in memory, the signed answers and notifications, and the simulator that
authenticates and carries out requests. The routes (`routes.py`) only translate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog

from schemas.common import Channel
from schemas.money import format_amount
from services.common.clock import Clock
from services.common.invariant import invariant
from services.gateway.channels import wechat_pay_protocol as protocol
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.notifier import OutboundNotification, RenderedAttempt
from services.psp_simulator.settings import PspSimulatorSettings
from services.psp_simulator.store import (
    TradeConflict,
    TradeNotClosable,
    TradeNotPayable,
    TradeStoreError,
    TradeStoreFull,
    UnknownTrade,
)

logger = structlog.get_logger(__name__)
# WeChat Pay takes at most 50 partial refunds of one trade.
REFUND_COUNT_PER_TRADE_MAX: Final = 50
# The payer's page token: 16 random bytes, URL-safe.
PAY_TOKEN_BYTES: Final = 16
_NOTIFICATION_SUMMARIES: Final = {
    protocol.EVENT_TRANSACTION_SUCCESS: "payment succeeded",
    protocol.EVENT_TRANSACTION_USERPAYING: "the payer is paying",
    protocol.EVENT_REFUND_SUCCESS: "refund succeeded",
    protocol.EVENT_REFUND_ABNORMAL: "refund abnormal",
}


@dataclass(frozen=True)
class WeChatTrade:
    """One native-pay trade; `pay_token` names it in the payer's URLs."""

    transaction_id: str
    pay_token: str
    mch_id: str
    out_trade_no: str
    total_minor: int
    currency: str
    description: str
    notify_url: str
    trade_state: str
    created_at: datetime
    success_time: datetime | None = None
    # Sum of the trade's refunds that are processing or succeeded; never above the total.
    refunded_minor: int = 0
    refund_count: int = 0


@dataclass(frozen=True)
class WeChatRefund:
    """One refund of a paid trade, PROCESSING until `finish_refund` ends it."""

    refund_id: str
    mch_id: str
    out_refund_no: str
    out_trade_no: str
    transaction_id: str
    refund_minor: int
    total_minor: int
    currency: str
    reason: str
    notify_url: str
    status: str
    created_at: datetime
    # Decided when the refund is accepted (the `fail_refunds` fault at that moment).
    ends_abnormal: bool
    finished_at: datetime | None = None


class RefundConflict(TradeStoreError):
    """The out_refund_no already names a refund of another trade or amount."""


class RefundNotAllowed(TradeStoreError):
    """The trade cannot take this refund; `code` is the channel's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_transaction_id(now: datetime) -> str:
    """Return a WeChat-Pay-looking transaction id: 4200, the UTC date, 16 random digits."""
    return f"4200{now:%Y%m%d}{secrets.randbelow(10**16):016d}"


def new_refund_id(now: datetime) -> str:
    """Return a WeChat-Pay-looking refund id: 5030, the UTC date, 17 random digits."""
    return f"5030{now:%Y%m%d}{secrets.randbelow(10**17):017d}"


class WeChatPayStore:
    """The simulated channel's trades and refunds, in memory and bounded.

    Trades are bounded by `trade_count_max`, refunds by the same number. All methods are
    synchronous and never await, so within one event loop each call is atomic.
    """

    def __init__(self, trade_count_max: int) -> None:
        invariant(trade_count_max > 0, "trade_count_max must be positive")
        self._count_max = trade_count_max
        self._trades: dict[tuple[str, str], WeChatTrade] = {}
        self._trade_key_by_token: dict[str, tuple[str, str]] = {}
        self._refunds: dict[tuple[str, str], WeChatRefund] = {}

    def create_trade(
        self,
        *,
        mch_id: str,
        out_trade_no: str,
        total_minor: int,
        currency: str,
        description: str,
        notify_url: str,
        now: datetime,
    ) -> WeChatTrade:
        """Create the trade, or return the existing one of the same merchant and number.

        Raises TradeConflict when the existing trade has another amount or currency, and
        TradeStoreFull when a new trade would exceed the bound.
        """
        existing = self.find_trade(mch_id, out_trade_no)
        if existing is not None:
            if (existing.total_minor, existing.currency) != (total_minor, currency):
                raise TradeConflict(
                    f"out_trade_no {out_trade_no} exists with "
                    f"{existing.total_minor} {existing.currency}"
                )
            return existing
        if len(self._trades) >= self._count_max:
            raise TradeStoreFull(f"the simulator holds {self._count_max} trades")
        trade = WeChatTrade(
            transaction_id=new_transaction_id(now),
            pay_token=secrets.token_urlsafe(PAY_TOKEN_BYTES),
            mch_id=mch_id,
            out_trade_no=out_trade_no,
            total_minor=total_minor,
            currency=currency,
            description=description,
            notify_url=notify_url,
            trade_state=protocol.TRADE_STATE_NOTPAY,
            created_at=now,
        )
        invariant(trade.pay_token not in self._trade_key_by_token, "pay token collision")
        self._trades[(mch_id, out_trade_no)] = trade
        self._trade_key_by_token[trade.pay_token] = (mch_id, out_trade_no)
        return trade

    def find_trade(self, mch_id: str, out_trade_no: str) -> WeChatTrade | None:
        return self._trades.get((mch_id, out_trade_no))

    def find_trade_by_token(self, pay_token: str) -> WeChatTrade | None:
        key = self._trade_key_by_token.get(pay_token)
        return None if key is None else self._trades[key]

    def pay(self, pay_token: str, now: datetime) -> tuple[WeChatTrade, bool]:
        """Mark the trade paid; return it and whether this call was the one that paid it.

        Paying a paid trade again changes nothing. Raises UnknownTrade and TradeNotPayable.
        """
        trade = self.find_trade_by_token(pay_token)
        if trade is None:
            raise UnknownTrade(pay_token)
        if trade.trade_state in protocol.PAID_TRADE_STATES:
            return trade, False
        if trade.trade_state != protocol.TRADE_STATE_NOTPAY:
            raise TradeNotPayable(f"trade {trade.transaction_id} is {trade.trade_state}")
        paid = dataclasses.replace(
            trade, trade_state=protocol.TRADE_STATE_SUCCESS, success_time=now
        )
        self._trades[(trade.mch_id, trade.out_trade_no)] = paid
        return paid, True

    def close(self, mch_id: str, out_trade_no: str) -> tuple[WeChatTrade, bool]:
        """Close an unpaid trade; return it and whether this call closed it.

        Closing a closed trade again changes nothing. Raises UnknownTrade and
        TradeNotClosable (the trade is paid).
        """
        trade = self.find_trade(mch_id, out_trade_no)
        if trade is None:
            raise UnknownTrade(out_trade_no)
        if trade.trade_state == protocol.TRADE_STATE_CLOSED:
            return trade, False
        if trade.trade_state in protocol.PAID_TRADE_STATES:
            raise TradeNotClosable(f"trade {trade.transaction_id} is already paid")
        closed = dataclasses.replace(trade, trade_state=protocol.TRADE_STATE_CLOSED)
        self._trades[(mch_id, out_trade_no)] = closed
        return closed, True

    def create_refund(
        self,
        *,
        mch_id: str,
        out_trade_no: str,
        out_refund_no: str,
        refund_minor: int,
        total_minor: int,
        currency: str,
        reason: str,
        notify_url: str | None,
        ends_abnormal: bool,
        now: datetime,
    ) -> tuple[WeChatRefund, bool]:
        """Accept a refund, or return the existing one of the same number; the flag says
        whether this call created it.

        Raises RefundConflict (the number names another refund), UnknownTrade,
        RefundNotAllowed (unpaid trade, wrong total or currency, too many refunds, more
        than the paid total) and TradeStoreFull.
        """
        existing = self.find_refund(mch_id, out_refund_no)
        if existing is not None:
            if (existing.out_trade_no, existing.refund_minor, existing.currency) != (
                out_trade_no,
                refund_minor,
                currency,
            ):
                raise RefundConflict(f"out_refund_no {out_refund_no} names another refund")
            return existing, False
        trade = self.find_trade(mch_id, out_trade_no)
        if trade is None:
            raise UnknownTrade(out_trade_no)
        _check_refundable(
            trade, refund_minor=refund_minor, total_minor=total_minor, currency=currency
        )
        if len(self._refunds) >= self._count_max:
            raise TradeStoreFull(f"the simulator holds {self._count_max} refunds")
        refund = WeChatRefund(
            refund_id=new_refund_id(now),
            mch_id=mch_id,
            out_refund_no=out_refund_no,
            out_trade_no=out_trade_no,
            transaction_id=trade.transaction_id,
            refund_minor=refund_minor,
            total_minor=trade.total_minor,
            currency=currency,
            reason=reason,
            notify_url=notify_url or trade.notify_url,
            status=protocol.REFUND_STATUS_PROCESSING,
            created_at=now,
            ends_abnormal=ends_abnormal,
        )
        self._refunds[(mch_id, out_refund_no)] = refund
        self._trades[(mch_id, out_trade_no)] = dataclasses.replace(
            trade,
            refunded_minor=trade.refunded_minor + refund_minor,
            refund_count=trade.refund_count + 1,
        )
        return refund, True

    def find_refund(self, mch_id: str, out_refund_no: str) -> WeChatRefund | None:
        return self._refunds.get((mch_id, out_refund_no))

    def finish_refund(self, mch_id: str, out_refund_no: str, now: datetime) -> WeChatRefund:
        """End a processing refund as SUCCESS, or ABNORMAL when it was accepted to fail.

        A successful refund turns its trade's state to REFUND; an abnormal one gives its
        amount back to what the trade can still refund, since no money moved.
        """
        refund = self._refunds[(mch_id, out_refund_no)]
        invariant(
            refund.status == protocol.REFUND_STATUS_PROCESSING,
            f"refund {refund.refund_id} finished twice",
        )
        trade = self._trades[(mch_id, refund.out_trade_no)]
        if refund.ends_abnormal:
            status = protocol.REFUND_STATUS_ABNORMAL
            trade = dataclasses.replace(
                trade, refunded_minor=trade.refunded_minor - refund.refund_minor
            )
        else:
            status = protocol.REFUND_STATUS_SUCCESS
            trade = dataclasses.replace(trade, trade_state=protocol.TRADE_STATE_REFUND)
        finished = dataclasses.replace(refund, status=status, finished_at=now)
        self._refunds[(mch_id, out_refund_no)] = finished
        self._trades[(mch_id, refund.out_trade_no)] = trade
        return finished


def _check_refundable(
    trade: WeChatTrade, *, refund_minor: int, total_minor: int, currency: str
) -> None:
    if trade.trade_state not in protocol.PAID_TRADE_STATES:
        raise RefundNotAllowed(
            protocol.CODE_TRADE_NOT_PAID, f"trade {trade.out_trade_no} is {trade.trade_state}"
        )
    if (total_minor, currency) != (trade.total_minor, trade.currency):
        raise RefundNotAllowed(
            protocol.CODE_INVALID_REQUEST, "amount.total and currency must match the trade"
        )
    if trade.refund_count >= REFUND_COUNT_PER_TRADE_MAX:
        raise RefundNotAllowed(
            protocol.CODE_INVALID_REQUEST,
            f"a trade takes at most {REFUND_COUNT_PER_TRADE_MAX} refunds",
        )
    if trade.refunded_minor + refund_minor > trade.total_minor:
        refundable = trade.total_minor - trade.refunded_minor
        raise RefundNotAllowed(
            protocol.CODE_NOT_ENOUGH, f"only {refundable} {trade.currency} can still be refunded"
        )


@dataclass(frozen=True)
class Answer:
    """What the simulator answers: a status and a JSON object, or no body at all."""

    status_code: int
    payload: dict[str, object] | None = None
    signed: bool = True


def error_answer(status_code: int, code: str, message: str, *, signed: bool = True) -> Answer:
    return Answer(status_code, {"code": code, "message": message}, signed=signed)


def transaction_json(trade: WeChatTrade, *, trade_state: str | None = None) -> dict[str, object]:
    """A trade as queries and transaction notifications show it; `trade_state` overrides
    the current state (an earlier one, for an out-of-order notification)."""
    state = trade.trade_state if trade_state is None else trade_state
    fields: dict[str, object] = {
        "mchid": trade.mch_id,
        "out_trade_no": trade.out_trade_no,
        "transaction_id": trade.transaction_id,
        "trade_type": "NATIVE",
        "trade_state": state,
        "amount": {"total": trade.total_minor, "currency": trade.currency},
    }
    if state in protocol.PAID_TRADE_STATES and trade.success_time is not None:
        fields["success_time"] = protocol.format_time(trade.success_time)
    return fields


def refund_json(refund: WeChatRefund, *, status_field: str = "status") -> dict[str, object]:
    """A refund as queries (`status`) and notifications (`refund_status`) show it."""
    fields: dict[str, object] = {
        "mchid": refund.mch_id,
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": refund.transaction_id,
        "out_trade_no": refund.out_trade_no,
        status_field: refund.status,
        "create_time": protocol.format_time(refund.created_at),
        "amount": {
            "refund": refund.refund_minor,
            "total": refund.total_minor,
            "currency": refund.currency,
        },
    }
    if refund.finished_at is not None:
        time_field = (
            "success_time" if refund.status == protocol.REFUND_STATUS_SUCCESS else "abnormal_time"
        )
        fields[time_field] = protocol.format_time(refund.finished_at)
    return fields


def pay_page(trade: WeChatTrade) -> str:
    state = html.escape(trade.trade_state)
    button = (
        '<form method="post"><button type="submit">Pay</button></form>'
        if trade.trade_state == protocol.TRADE_STATE_NOTPAY
        else f"<p>Trade state: {state}</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>WeChat Pay</title></head>"
        f"<body><h1>{html.escape(trade.description)}</h1>"
        f"<p>Amount: {html.escape(format_amount(trade.total_minor, trade.currency))}</p>"
        f"<p>Transaction: {html.escape(trade.transaction_id)}</p>{button}</body></html>"
    )


def signed_notification(
    *,
    api_v3_key: str,
    log_key: str,
    url: str,
    event_type: str,
    original_type: str,
    resource: dict[str, object],
    event_time: datetime,
) -> OutboundNotification:
    """A WeChat-Pay-style notification: the resource encrypted under the APIv3 key, the
    envelope signed anew at every attempt (each attempt has its own timestamp)."""
    plaintext = protocol.dumps(resource)

    def render(notify_id: str, now_s: int) -> RenderedAttempt:
        nonce = secrets.token_hex(protocol.RESOURCE_NONCE_LENGTH // 2)
        ciphertext = protocol.encrypt_resource(
            plaintext, nonce=nonce, associated_data=original_type, api_v3_key=api_v3_key
        )
        envelope = {
            "id": notify_id,
            "create_time": protocol.format_time(event_time),
            "event_type": event_type,
            "resource_type": protocol.RESOURCE_TYPE_ENCRYPTED,
            "summary": _NOTIFICATION_SUMMARIES.get(event_type, event_type),
            "resource": {
                "original_type": original_type,
                "algorithm": protocol.RESOURCE_ALGORITHM,
                "ciphertext": ciphertext,
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
        body = protocol.dumps(envelope)
        headers = {"content-type": "application/json"}
        headers.update(signature_headers(now_s, body, api_v3_key))
        return RenderedAttempt(body=body, headers=headers)

    return OutboundNotification(
        key=log_key, url=url, render=render, acknowledged=is_acknowledgement
    )


def is_acknowledgement(status_code: int, body: bytes) -> bool:
    """A WeChat-Pay-style receiver stops retries with any 2xx answer (200 or 204)."""
    return 200 <= status_code < 300


def signature_headers(now_s: int, body: bytes, key: str) -> dict[str, str]:
    timestamp = str(now_s)
    nonce = secrets.token_hex(16)
    return {
        protocol.HEADER_TIMESTAMP: timestamp,
        protocol.HEADER_NONCE: nonce,
        protocol.HEADER_SIGNATURE: protocol.sign(
            protocol.answer_message(timestamp, nonce, body), key
        ),
        protocol.HEADER_SERIAL: protocol.SIGNATURE_SERIAL,
    }


class RequestProblem(Exception):
    """A request the simulator refuses; `answer` says how."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(str(answer.payload))
        self.answer = answer


@dataclass
class WeChatPaySimulator:
    """The WeChat-Pay-style channel's behaviour, independent of HTTP; routes only translate.

    Refunds finish in background tasks it owns; `stop` cancels those still waiting.
    """

    context: SimulatorContext
    store: WeChatPayStore
    keys_by_mch_id: dict[str, str]
    _refund_tasks: set[asyncio.Task[None]] = dataclasses.field(default_factory=set, init=False)

    @property
    def settings(self) -> PspSimulatorSettings:
        return self.context.settings

    @property
    def clock(self) -> Clock:
        return self.context.clock

    def authenticate(
        self, *, method: str, target: str, authorization: str, body: bytes
    ) -> tuple[str, str]:
        """Return the mchid and APIv3 key of a correctly signed, fresh request.

        Raises RequestProblem with an unsigned 401 SIGN_ERROR otherwise.
        """
        parsed = protocol.parse_authorization(authorization)
        if parsed is None:
            raise _sign_error("Authorization is missing or malformed")
        key = self.keys_by_mch_id.get(parsed.mch_id)
        if key is None:
            raise _sign_error("unknown mchid")
        if not 0 < len(parsed.nonce) <= protocol.NONCE_LENGTH_MAX:
            raise _sign_error("nonce_str must be 1 to 64 characters")
        if protocol.UNIX_SECONDS_PATTERN.fullmatch(parsed.timestamp) is None:
            raise _sign_error("timestamp must be unix seconds")
        message = protocol.request_message(method, target, parsed.timestamp, parsed.nonce, body)
        if not protocol.verify(message, parsed.signature, key):
            raise _sign_error("signature does not verify")
        skew_s = abs(int(self.clock.now().timestamp()) - int(parsed.timestamp))
        if skew_s > protocol.TIMESTAMP_SKEW_S_MAX:
            raise _sign_error("timestamp is too far from the simulator's clock")
        return parsed.mch_id, key

    def native_pay(self, mch_id: str, body: bytes) -> Answer:
        try:
            fields = _json_object(body)
            if _string(fields, "mchid") != mch_id:
                raise _param_error("mchid must be the signer's mchid")
            out_trade_no = _out_number(fields, "out_trade_no")
            description = _string(fields, "description", protocol.DESCRIPTION_LENGTH_MAX)
            notify_url = _notify_url(fields)
            amount = _amount_object(fields)
            total_minor = _positive_int(amount, "total")
            currency = _currency(amount)
        except RequestProblem as problem:
            return problem.answer
        declining = self.context.faults.of(Channel.WECHAT_PAY).decline_payments
        if declining and self.store.find_trade(mch_id, out_trade_no) is None:
            return error_answer(403, protocol.CODE_TRADE_ERROR, "the channel refuses new trades")
        try:
            trade = self.store.create_trade(
                mch_id=mch_id,
                out_trade_no=out_trade_no,
                total_minor=total_minor,
                currency=currency,
                description=description,
                notify_url=notify_url,
                now=self.clock.now(),
            )
        except TradeConflict as error:
            return error_answer(400, protocol.CODE_INVALID_REQUEST, str(error))
        except TradeStoreFull as error:
            return error_answer(503, protocol.CODE_SYSTEM_ERROR, str(error))
        logger.info(
            "wechat_trade_created",
            transaction_id=trade.transaction_id,
            out_trade_no=trade.out_trade_no,
        )
        return Answer(
            200,
            {
                "code_url": f"{protocol.CODE_URL_PREFIX}{trade.pay_token}",
                "h5_url": f"{self.settings.base_url}{protocol.PAYER_PAY_PATH_PREFIX}"
                f"{trade.pay_token}",
                "transaction_id": trade.transaction_id,
                "out_trade_no": trade.out_trade_no,
            },
        )

    def query_trade(self, mch_id: str, out_trade_no: str, mchid_parameter: str) -> Answer:
        if mchid_parameter != mch_id:
            return error_answer(400, protocol.CODE_PARAM_ERROR, "mchid must be the signer's mchid")
        trade = self.store.find_trade(mch_id, out_trade_no)
        if trade is None:
            return error_answer(404, protocol.CODE_ORDER_NOT_EXIST, "no such trade")
        return Answer(200, transaction_json(trade))

    def close_trade(self, mch_id: str, out_trade_no: str, body: bytes) -> Answer:
        """Close an unpaid trade; closing a closed trade again is a no-op."""
        try:
            if _string(_json_object(body), "mchid") != mch_id:
                raise _param_error("mchid must be the signer's mchid")
        except RequestProblem as problem:
            return problem.answer
        try:
            trade, newly_closed = self.store.close(mch_id, out_trade_no)
        except UnknownTrade:
            return error_answer(404, protocol.CODE_ORDER_NOT_EXIST, "no such trade")
        except TradeNotClosable as error:
            return error_answer(400, protocol.CODE_ORDERPAID, str(error))
        if newly_closed:
            logger.info("wechat_trade_closed", transaction_id=trade.transaction_id)
        return Answer(204)

    def refund(self, mch_id: str, key: str, body: bytes) -> Answer:
        try:
            fields = _json_object(body)
            out_trade_no = _out_number(fields, "out_trade_no")
            out_refund_no = _out_number(fields, "out_refund_no")
            reason = _optional_string(fields, "reason", protocol.REFUND_REASON_LENGTH_MAX)
            notify_url = _notify_url(fields) if "notify_url" in fields else None
            amount = _amount_object(fields)
            refund_minor = _positive_int(amount, "refund")
            total_minor = _positive_int(amount, "total")
            currency = _currency(amount)
        except RequestProblem as problem:
            return problem.answer
        try:
            refund, created = self.store.create_refund(
                mch_id=mch_id,
                out_trade_no=out_trade_no,
                out_refund_no=out_refund_no,
                refund_minor=refund_minor,
                total_minor=total_minor,
                currency=currency,
                reason=reason,
                notify_url=notify_url,
                ends_abnormal=self.context.faults.of(Channel.WECHAT_PAY).fail_refunds,
                now=self.clock.now(),
            )
        except RefundConflict as error:
            return error_answer(400, protocol.CODE_INVALID_REQUEST, str(error))
        except UnknownTrade:
            return error_answer(404, protocol.CODE_ORDER_NOT_EXIST, "no such trade")
        except RefundNotAllowed as error:
            return error_answer(400, error.code, str(error))
        except TradeStoreFull as error:
            return error_answer(503, protocol.CODE_SYSTEM_ERROR, str(error))
        if created:
            logger.info(
                "wechat_refund_accepted",
                refund_id=refund.refund_id,
                out_refund_no=refund.out_refund_no,
                ends_abnormal=refund.ends_abnormal,
            )
            self._finish_later(refund, key)
        return Answer(200, refund_json(refund))

    def query_refund(self, mch_id: str, out_refund_no: str) -> Answer:
        refund = self.store.find_refund(mch_id, out_refund_no)
        if refund is None:
            return error_answer(404, protocol.CODE_RESOURCE_NOT_EXISTS, "no such refund")
        return Answer(200, refund_json(refund))

    def pay(self, pay_token: str) -> WeChatTrade:
        """Mark the trade paid and, the first time only, schedule its notification.

        Raises UnknownTrade and TradeNotPayable.
        """
        sender = self.context.running_sender()
        trade, newly_paid = self.store.pay(pay_token, self.clock.now())
        if not newly_paid:
            return trade
        logger.info("wechat_trade_paid", transaction_id=trade.transaction_id)
        faults = self.context.faults.of(Channel.WECHAT_PAY)
        if faults.lose_notifications:
            logger.info("notifications_lost_on_purpose", transaction_id=trade.transaction_id)
            return trade
        key = self.keys_by_mch_id[trade.mch_id]
        notifications = [
            self._transaction_notification(trade, key, protocol.EVENT_TRANSACTION_SUCCESS)
        ]
        if faults.out_of_order_notifications:
            # The "payer is paying" state arrives after the success.
            notifications.append(
                self._transaction_notification(
                    trade,
                    key,
                    protocol.EVENT_TRANSACTION_USERPAYING,
                    trade_state=protocol.TRADE_STATE_USERPAYING,
                )
            )
        sender.schedule(
            notifications,
            duplicate=faults.duplicate_notifications,
            delay_ms=faults.notification_delay_ms,
            reference=trade.out_trade_no,
        )
        return trade

    async def stop(self) -> None:
        """Cancel the refunds still waiting to finish and wait until their tasks ended."""
        tasks = list(self._refund_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _transaction_notification(
        self, trade: WeChatTrade, key: str, event_type: str, *, trade_state: str | None = None
    ) -> OutboundNotification:
        return signed_notification(
            api_v3_key=key,
            log_key=trade.transaction_id,
            url=trade.notify_url,
            event_type=event_type,
            original_type=protocol.ORIGINAL_TYPE_TRANSACTION,
            resource=transaction_json(trade, trade_state=trade_state),
            event_time=trade.success_time or trade.created_at,
        )

    def _finish_later(self, refund: WeChatRefund, key: str) -> None:
        task = asyncio.create_task(
            self._finish_refund(refund.mch_id, refund.out_refund_no, key),
            name=f"wechat-refund-{refund.refund_id}",
        )
        self._refund_tasks.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._refund_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "wechat_refund_task_failed", task=task.get_name(), exc_info=task.exception()
            )

    async def _finish_refund(self, mch_id: str, out_refund_no: str, key: str) -> None:
        await asyncio.sleep(self.settings.refund_processing_ms / 1000)
        refund = self.store.finish_refund(mch_id, out_refund_no, self.clock.now())
        logger.info("wechat_refund_finished", refund_id=refund.refund_id, status=refund.status)
        if self.context.faults.of(Channel.WECHAT_PAY).lose_notifications:
            logger.info("notifications_lost_on_purpose", refund_id=refund.refund_id)
            return
        if self.context.sender is None:
            logger.warning("wechat_refund_not_notified", refund_id=refund.refund_id)
            return
        event_type = (
            protocol.EVENT_REFUND_SUCCESS
            if refund.status == protocol.REFUND_STATUS_SUCCESS
            else protocol.EVENT_REFUND_ABNORMAL
        )
        notification = signed_notification(
            api_v3_key=key,
            log_key=refund.refund_id,
            url=refund.notify_url,
            event_type=event_type,
            original_type=protocol.ORIGINAL_TYPE_REFUND,
            resource=refund_json(refund, status_field="refund_status"),
            event_time=refund.finished_at or refund.created_at,
        )
        self.context.sender.schedule(
            [notification],
            duplicate=self.context.faults.of(Channel.WECHAT_PAY).duplicate_notifications,
        )


def _sign_error(message: str) -> RequestProblem:
    return RequestProblem(error_answer(401, protocol.CODE_SIGN_ERROR, message, signed=False))


def _param_error(message: str) -> RequestProblem:
    return RequestProblem(error_answer(400, protocol.CODE_PARAM_ERROR, message))


def _json_object(body: bytes) -> dict[str, object]:
    try:
        return protocol.loads_object(body)
    except ValueError as error:
        raise _param_error("body must be a JSON object") from error


def _string(fields: dict[str, object], name: str, length_max: int = 128) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or value == "":
        raise _param_error(f"{name} must be a non-empty string")
    if len(value) > length_max:
        raise _param_error(f"{name} is longer than {length_max} characters")
    return value


def _optional_string(fields: dict[str, object], name: str, length_max: int) -> str:
    if fields.get(name) in (None, ""):
        return ""
    return _string(fields, name, length_max)


def _out_number(fields: dict[str, object], name: str) -> str:
    value = _string(fields, name)
    if protocol.OUT_NUMBER_PATTERN.fullmatch(value) is None:
        raise _param_error(f"{name} is malformed")
    return value


def _notify_url(fields: dict[str, object]) -> str:
    url = _string(fields, "notify_url", protocol.NOTIFY_URL_LENGTH_MAX)
    if not url.startswith(("http://", "https://")):
        raise _param_error("notify_url must be http(s)")
    return url


def _amount_object(fields: dict[str, object]) -> dict[str, object]:
    amount = fields.get("amount")
    if not isinstance(amount, dict):
        raise _param_error("amount must be an object")
    return amount


def _positive_int(fields: dict[str, object], name: str) -> int:
    value = fields.get(name)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 < value <= protocol.AMOUNT_MINOR_MAX
    ):
        raise _param_error(f"amount.{name} must be a positive integer of minor units")
    return value


def _currency(fields: dict[str, object]) -> str:
    value = fields.get("currency")
    if not isinstance(value, str) or protocol.CURRENCY_PATTERN.fullmatch(value) is None:
        raise _param_error("amount.currency must be an ISO 4217 code")
    return value
