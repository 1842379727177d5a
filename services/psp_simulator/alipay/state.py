"""The Alipay-style channel's state and behaviour, independent of HTTP: the checks of
signed requests, the simulator that precreates, closes, refunds and queries trades, and
the payer's page. The routes (`routes.py`) only translate.
"""

from __future__ import annotations

import asyncio
import html
import re
from dataclasses import dataclass, field
from typing import Final, TypeGuard

import structlog

from schemas.common import Channel
from schemas.money import format_amount
from services.common.clock import Clock
from services.gateway.channels import alipay_protocol as protocol
from services.psp_simulator.context import SimulatorContext
from services.psp_simulator.notifier import alipay_refund_notification, alipay_trade_notification
from services.psp_simulator.settings import PspSimulatorSettings
from services.psp_simulator.store import (
    Refund,
    RefundAmountExceeded,
    RefundConflict,
    RefundCurrencyMismatch,
    Trade,
    TradeConflict,
    TradeNotClosable,
    TradeNotRefundable,
    TradeStore,
    TradeStoreFull,
    UnknownTrade,
)

logger = structlog.get_logger(__name__)

# A signed request older or newer than this is refused, so a captured request cannot be
# replayed days later; fifteen minutes tolerates ordinary clock drift.
REQUEST_TIMESTAMP_SKEW_S_MAX: Final = 900
SUBJECT_LENGTH_MAX: Final = 256
REFUND_REASON_LENGTH_MAX: Final = 256
NOTIFY_URL_LENGTH_MAX: Final = 2048
NONCE_LENGTH_MAX: Final = 64

# Alipay's code for "try again later", used when the simulator is full.
CODE_SERVICE_UNAVAILABLE: Final = "20000"
SUB_CODE_TRADE_STORE_FULL: Final = "TRADE_STORE_FULL"

PRECREATE_REQUIRED_FIELDS: Final = (
    "out_trade_no",
    "total_amount_minor",
    "currency",
    "subject",
    "notify_url",
    "timestamp",
    "nonce",
)
CLOSE_REQUIRED_FIELDS: Final = ("out_trade_no", "timestamp", "nonce")
# `refund_reason` is optional: an empty value is left out of the signature anyway.
REFUND_REQUIRED_FIELDS: Final = (
    "out_trade_no",
    "out_request_no",
    "refund_amount_minor",
    "currency",
    "notify_url",
    "timestamp",
    "nonce",
)

_OUT_TRADE_NO_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_AMOUNT_PATTERN: Final = re.compile(r"[1-9][0-9]{0,17}")
_CURRENCY_PATTERN: Final = re.compile(r"[A-Z]{3}")
_UNIX_SECONDS_PATTERN: Final = re.compile(r"[0-9]{1,12}")


def failure(
    sub_code: str, sub_msg: str, code: str = protocol.CODE_BUSINESS_FAILED
) -> dict[str, str]:
    message = "Business Failed" if code == protocol.CODE_BUSINESS_FAILED else "Service Unavailable"
    return {"code": code, "msg": message, "sub_code": sub_code, "sub_msg": sub_msg}


def signed_answer(fields: dict[str, str], secret: str) -> dict[str, str]:
    """Sign an answer; the answer carries `sign` only, as the gateway expects."""
    return {**fields, protocol.SIGN_FIELD: protocol.sign(fields, secret)}


def precreate_problem(fields: dict[str, str], now_s: int) -> str | None:
    """Return why a signed precreate request is invalid, or None when it is valid."""
    missing = [name for name in PRECREATE_REQUIRED_FIELDS if fields.get(name, "") == ""]
    if missing:
        return f"missing {', '.join(missing)}"
    checks = (
        (_OUT_TRADE_NO_PATTERN.fullmatch(fields["out_trade_no"]), "out_trade_no is malformed"),
        (
            _AMOUNT_PATTERN.fullmatch(fields["total_amount_minor"]),
            "total_amount_minor must be a positive integer",
        ),
        (_CURRENCY_PATTERN.fullmatch(fields["currency"]), "currency must be an ISO 4217 code"),
        (len(fields["subject"]) <= SUBJECT_LENGTH_MAX, "subject is too long"),
        (fields["notify_url"].startswith(("http://", "https://")), "notify_url must be http(s)"),
        (len(fields["notify_url"]) <= NOTIFY_URL_LENGTH_MAX, "notify_url is too long"),
    )
    return _first_problem(checks) or _replay_protection_problem(fields, now_s)


def close_problem(fields: dict[str, str], now_s: int) -> str | None:
    """Return why a signed close request is invalid, or None when it is valid."""
    missing = [name for name in CLOSE_REQUIRED_FIELDS if fields.get(name, "") == ""]
    if missing:
        return f"missing {', '.join(missing)}"
    checks = (
        (_OUT_TRADE_NO_PATTERN.fullmatch(fields["out_trade_no"]), "out_trade_no is malformed"),
    )
    return _first_problem(checks) or _replay_protection_problem(fields, now_s)


def refund_problem(fields: dict[str, str], now_s: int) -> str | None:
    """Return why a signed refund request is invalid, or None when it is valid."""
    missing = [name for name in REFUND_REQUIRED_FIELDS if fields.get(name, "") == ""]
    if missing:
        return f"missing {', '.join(missing)}"
    checks = (
        (_OUT_TRADE_NO_PATTERN.fullmatch(fields["out_trade_no"]), "out_trade_no is malformed"),
        (
            _OUT_TRADE_NO_PATTERN.fullmatch(fields["out_request_no"]),
            "out_request_no is malformed",
        ),
        (
            _AMOUNT_PATTERN.fullmatch(fields["refund_amount_minor"]),
            "refund_amount_minor must be a positive integer",
        ),
        (_CURRENCY_PATTERN.fullmatch(fields["currency"]), "currency must be an ISO 4217 code"),
        (
            len(fields.get("refund_reason", "")) <= REFUND_REASON_LENGTH_MAX,
            "refund_reason is too long",
        ),
        (fields["notify_url"].startswith(("http://", "https://")), "notify_url must be http(s)"),
        (len(fields["notify_url"]) <= NOTIFY_URL_LENGTH_MAX, "notify_url is too long"),
    )
    return _first_problem(checks) or _replay_protection_problem(fields, now_s)


def refund_fields(refund: Refund) -> dict[str, str]:
    """The fields that describe a refund in the answers to a refund request and query."""
    fields = {
        "code": protocol.CODE_SUCCESS,
        "msg": "Success",
        "trade_no": refund.trade_no,
        "out_trade_no": refund.out_trade_no,
        "out_request_no": refund.out_request_no,
        "refund_no": refund.refund_no,
        "refund_status": refund.refund_status,
        "refund_amount_minor": str(refund.refund_amount_minor),
        "currency": refund.currency,
    }
    if refund.gmt_refund is not None:
        fields["gmt_refund"] = refund.gmt_refund.isoformat()
    if refund.fail_reason != "":
        fields["fail_reason"] = refund.fail_reason
    return fields


def _first_problem(checks: tuple[tuple[object, str], ...]) -> str | None:
    for passed, problem in checks:
        if not passed:
            return problem
    return None


def _replay_protection_problem(fields: dict[str, str], now_s: int) -> str | None:
    """Check `nonce` and `timestamp`, which every signed request carries."""
    if len(fields["nonce"]) > NONCE_LENGTH_MAX:
        return "nonce is too long"
    if _UNIX_SECONDS_PATTERN.fullmatch(fields["timestamp"]) is None:
        return "timestamp must be unix seconds"
    if abs(now_s - int(fields["timestamp"])) > REQUEST_TIMESTAMP_SKEW_S_MAX:
        return "timestamp is too far from the simulator's clock"
    return None


def pay_page(trade: Trade) -> str:
    status = html.escape(trade.trade_status)
    button = (
        '<form method="post"><button type="submit">Pay</button></form>'
        if trade.trade_status == protocol.TRADE_STATUS_WAIT_BUYER_PAY
        else f"<p>Trade status: {status}</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Pay</title></head><body>"
        f"<h1>{html.escape(trade.subject)}</h1>"
        f"<p>Amount: {html.escape(format_amount(trade.total_amount_minor, trade.currency))}</p>"
        f"<p>Trade: {html.escape(trade.trade_no)}</p>{button}</body></html>"
    )


class RequestRefused(Exception):
    """A request failed authentication; `answer` is the unsigned refusal the PSP sends."""

    def __init__(self, answer: dict[str, str]) -> None:
        super().__init__(answer.get("sub_code", ""))
        self.answer = answer


@dataclass
class AlipaySimulator:
    """The Alipay-style channel's behaviour, independent of HTTP; routes only translate."""

    context: SimulatorContext
    store: TradeStore
    secrets_by_app_id: dict[str, str]
    # The timers that finish accepted refunds, by refund_no, until they fire.
    _refund_timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict, init=False)

    @property
    def settings(self) -> PspSimulatorSettings:
        return self.context.settings

    @property
    def clock(self) -> Clock:
        return self.context.clock

    def authenticate(self, body: object) -> tuple[dict[str, str], str]:
        """Return the fields of a signed request and the secret of its app id.

        Raises RequestRefused, with an unsigned answer, when the body is not a JSON object
        of strings, the app id is unknown, or the signature does not verify.
        """
        if not _is_string_map(body):
            raise RequestRefused(
                failure(
                    protocol.SUB_CODE_INVALID_PARAMETER, "body must be a JSON object of strings"
                )
            )
        fields = body
        secret = self.secrets_by_app_id.get(fields.get("app_id", ""))
        if secret is None:
            raise RequestRefused(failure(protocol.SUB_CODE_INVALID_APP_ID, "unknown app_id"))
        if fields.get(protocol.SIGN_TYPE_FIELD) != protocol.SIGN_TYPE:
            raise RequestRefused(
                failure(
                    protocol.SUB_CODE_INVALID_PARAMETER, f"sign_type must be {protocol.SIGN_TYPE}"
                )
            )
        if not protocol.verify(fields, secret):
            raise RequestRefused(
                failure(protocol.SUB_CODE_INVALID_SIGNATURE, "signature does not verify")
            )
        return fields, secret

    def precreate(self, body: object) -> dict[str, str]:
        try:
            fields, secret = self.authenticate(body)
        except RequestRefused as refused:
            return refused.answer
        now = self.clock.now()
        problem = precreate_problem(fields, int(now.timestamp()))
        if problem is not None:
            return signed_answer(failure(protocol.SUB_CODE_INVALID_PARAMETER, problem), secret)
        declining = self.context.faults.of(Channel.ALIPAY).decline_payments
        if (
            declining
            and self.store.find_by_out_trade_no(fields["app_id"], fields["out_trade_no"]) is None
        ):
            refusal = failure(protocol.SUB_CODE_PAYMENT_REFUSED, "the channel refuses new trades")
            return signed_answer(refusal, secret)
        try:
            trade = self.store.precreate(
                app_id=fields["app_id"],
                out_trade_no=fields["out_trade_no"],
                total_amount_minor=int(fields["total_amount_minor"]),
                currency=fields["currency"],
                subject=fields["subject"],
                notify_url=fields["notify_url"],
                now=now,
            )
        except TradeConflict as error:
            return signed_answer(failure(protocol.SUB_CODE_TRADE_CONFLICT, str(error)), secret)

        except TradeStoreFull as error:
            answer = failure(SUB_CODE_TRADE_STORE_FULL, str(error), code=CODE_SERVICE_UNAVAILABLE)
            return signed_answer(answer, secret)
        logger.info("trade_precreated", trade_no=trade.trade_no, out_trade_no=trade.out_trade_no)
        base_url = self.settings.base_url
        return signed_answer(
            {
                "code": protocol.CODE_SUCCESS,
                "msg": "Success",
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "pay_url": f"{base_url}/pay/{trade.trade_no}",
                "qr_code": f"{base_url}/qr/{trade.trade_no}",
            },
            secret,
        )

    def close(self, body: object) -> dict[str, str]:
        """Close a trade still waiting for payment; closing a closed trade is a no-op."""
        try:
            fields, secret = self.authenticate(body)
        except RequestRefused as refused:
            return refused.answer
        problem = close_problem(fields, int(self.clock.now().timestamp()))
        if problem is not None:
            return signed_answer(failure(protocol.SUB_CODE_INVALID_PARAMETER, problem), secret)
        try:
            trade, newly_closed = self.store.close(fields["app_id"], fields["out_trade_no"])
        except UnknownTrade:
            return signed_answer(
                failure(protocol.SUB_CODE_TRADE_NOT_EXIST, "no such trade"), secret
            )
        except TradeNotClosable as error:
            return signed_answer(failure(protocol.SUB_CODE_TRADE_STATUS_ERROR, str(error)), secret)
        if newly_closed:
            logger.info("trade_closed", trade_no=trade.trade_no, out_trade_no=trade.out_trade_no)
        return signed_answer(
            {
                "code": protocol.CODE_SUCCESS,
                "msg": "Success",
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "trade_status": trade.trade_status,
            },
            secret,
        )

    def query(self, app_id: str, out_trade_no: str) -> dict[str, str]:
        secret = self.secrets_by_app_id.get(app_id)
        if secret is None:
            return failure(protocol.SUB_CODE_INVALID_APP_ID, "unknown app_id")
        trade = self.store.find_by_out_trade_no(app_id, out_trade_no)
        if trade is None:
            return signed_answer(
                failure(protocol.SUB_CODE_TRADE_NOT_EXIST, "no such trade"), secret
            )
        answer = {
            "code": protocol.CODE_SUCCESS,
            "msg": "Success",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": trade.trade_status,
            "total_amount_minor": str(trade.total_amount_minor),
            "currency": trade.currency,
        }
        if trade.gmt_payment is not None:
            answer["gmt_payment"] = trade.gmt_payment.isoformat()
        return signed_answer(answer, secret)

    def refund(self, body: object) -> dict[str, str]:
        """Accept a refund of a paid trade and start processing it; idempotent by
        (app_id, out_request_no).

        The answer says REFUND_PROCESSING for a new refund; a retry answers the same refund
        with its current status. Refusals (signed, code 40004): REFUND_CONFLICT,
        TRADE_NOT_EXIST, TRADE_STATUS_ERROR (not paid), INVALID_PARAMETER (malformed, or
        another currency than the trade's), REFUND_AMOUNT_EXCEEDED.
        """
        try:
            fields, secret = self.authenticate(body)
        except RequestRefused as refused:
            return refused.answer
        now = self.clock.now()
        problem = refund_problem(fields, int(now.timestamp()))
        if problem is not None:
            return signed_answer(failure(protocol.SUB_CODE_INVALID_PARAMETER, problem), secret)
        try:
            refund, created = self.store.refund(
                app_id=fields["app_id"],
                out_trade_no=fields["out_trade_no"],
                out_request_no=fields["out_request_no"],
                refund_amount_minor=int(fields["refund_amount_minor"]),
                currency=fields["currency"],
                refund_reason=fields.get("refund_reason", ""),
                notify_url=fields["notify_url"],
                fails=self.context.faults.of(Channel.ALIPAY).fail_refunds,
                now=now,
            )
        except RefundConflict as error:
            return signed_answer(failure(protocol.SUB_CODE_REFUND_CONFLICT, str(error)), secret)
        except UnknownTrade:
            return signed_answer(
                failure(protocol.SUB_CODE_TRADE_NOT_EXIST, "no such trade"), secret
            )
        except TradeNotRefundable as error:
            return signed_answer(failure(protocol.SUB_CODE_TRADE_STATUS_ERROR, str(error)), secret)
        except RefundCurrencyMismatch as error:
            return signed_answer(failure(protocol.SUB_CODE_INVALID_PARAMETER, str(error)), secret)
        except RefundAmountExceeded as error:
            answer = failure(protocol.SUB_CODE_REFUND_AMOUNT_EXCEEDED, str(error))
            return signed_answer(answer, secret)
        except TradeStoreFull as error:
            answer = failure(SUB_CODE_TRADE_STORE_FULL, str(error), code=CODE_SERVICE_UNAVAILABLE)
            return signed_answer(answer, secret)
        if created:
            logger.info(
                "refund_accepted",
                refund_no=refund.refund_no,
                out_request_no=refund.out_request_no,
                trade_no=refund.trade_no,
                fails=refund.fails,
            )
            self._refund_timers[refund.refund_no] = asyncio.get_running_loop().call_later(
                self.settings.refund_processing_ms / 1000, self.finish_refund, refund.refund_no
            )
        return signed_answer(refund_fields(refund), secret)

    def query_refund(self, app_id: str, out_request_no: str, out_trade_no: str) -> dict[str, str]:
        """Answer a refund's status; a refund of another trade is REFUND_NOT_EXIST."""
        secret = self.secrets_by_app_id.get(app_id)
        if secret is None:
            return failure(protocol.SUB_CODE_INVALID_APP_ID, "unknown app_id")
        refund = self.store.find_refund(app_id, out_request_no)
        if refund is None or refund.out_trade_no != out_trade_no:
            return signed_answer(
                failure(protocol.SUB_CODE_REFUND_NOT_EXIST, "no such refund of this trade"),
                secret,
            )
        return signed_answer(refund_fields(refund), secret)

    def finish_refund(self, refund_no: str) -> None:
        """End a processing refund and, the first time only, notify its result.

        Runs as an event loop callback once the refund's processing time is over. The
        lose_notifications and duplicate_notifications faults, and the trade's
        LOSE_NOTIFICATIONS_MARKER, apply as they are when the refund finishes.
        """
        self._refund_timers.pop(refund_no, None)
        refund, newly_finished = self.store.finish_refund(refund_no, self.clock.now())
        if not newly_finished:
            return
        logger.info(
            "refund_finished",
            refund_no=refund.refund_no,
            out_request_no=refund.out_request_no,
            refund_status=refund.refund_status,
        )
        trade = self.store.find_by_trade_no(refund.trade_no)
        faults = self.context.faults.of(Channel.ALIPAY)
        lost_by_marker = trade is not None and protocol.LOSE_NOTIFICATIONS_MARKER in trade.subject
        if lost_by_marker or faults.lose_notifications:
            logger.info("notifications_lost_on_purpose", refund_no=refund.refund_no)
            return
        sender = self.context.sender
        if sender is None:
            logger.warning("refund_not_notified", refund_no=refund.refund_no, reason="stopped")
            return
        notification = alipay_refund_notification(refund, self.secrets_by_app_id[refund.app_id])
        sender.schedule([notification], duplicate=faults.duplicate_notifications)

    def cancel_pending_refunds(self) -> None:
        """Stop the timers of refunds still processing; they stay REFUND_PROCESSING."""
        for timer in self._refund_timers.values():
            timer.cancel()
        self._refund_timers.clear()

    def pay(self, trade_no: str) -> Trade:
        """Mark the trade paid and, the first time only, schedule its notification.

        Raises UnknownTrade and TradeNotPayable.
        """
        sender = self.context.running_sender()
        trade, newly_paid = self.store.pay(trade_no, self.clock.now())
        if newly_paid:
            logger.info("trade_paid", trade_no=trade.trade_no, out_trade_no=trade.out_trade_no)
            faults = self.context.faults.of(Channel.ALIPAY)
            if protocol.LOSE_NOTIFICATIONS_MARKER in trade.subject or faults.lose_notifications:
                # A sandbox switch, like a test card number: this trade's notifications
                # are lost, so only a query finds out that it was paid.
                logger.info("notifications_lost_on_purpose", trade_no=trade.trade_no)
            else:
                secret = self.secrets_by_app_id[trade.app_id]
                notifications = [alipay_trade_notification(trade, secret)]
                if faults.out_of_order_notifications:
                    # The "waiting for the payer" status arrives after the success.
                    notifications.append(alipay_trade_notification(trade, secret, waiting=True))
                sender.schedule(
                    notifications,
                    duplicate=faults.duplicate_notifications,
                    delay_ms=faults.notification_delay_ms,
                    reference=trade.out_trade_no,
                )
        return trade


def _is_string_map(value: object) -> TypeGuard[dict[str, str]]:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    )
