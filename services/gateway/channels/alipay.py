"""The Alipay channel adapter: precreate, query and close trades, refund them, and read
Alipay's callbacks (trade status and refund status notifications).

The same adapter talks to the real channel and to payrail's PSP simulator; only
`base_url`, `app_id` and `secret` differ.

Refunds finish asynchronously: `refund` only learns that Alipay accepted the request; the
result arrives as a `refund_status_sync` notification (read by `read_notification`) or is
asked for with `query_refund`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Final
from urllib.parse import parse_qsl, quote

import httpx

from services.common.clock import Clock, SystemClock
from services.common.invariant import invariant
from services.gateway.channels import alipay_protocol as protocol
from services.gateway.channels import wire
from services.gateway.channels.base import (
    ChannelError,
    ChannelNotification,
    ChannelRejected,
    ChannelUnavailable,
    IgnoredNotification,
    InvalidNotification,
    NotificationAnswer,
    PreparedTrade,
    RefundAccepted,
    VerifiedPaymentNotification,
    VerifiedRefundNotification,
)

# Alipay caps a trade subject at 256 characters; longer descriptions are cut, not refused,
# because the subject is only shown to the payer.
SUBJECT_LENGTH_MAX: Final = 256
# The longest response body the adapter accepts; a precreate answer is a few hundred bytes.
RESPONSE_BYTES_MAX: Final = 64 * 1024
# The stable code of ChannelRejected when a trade cannot be closed because it is paid.
REJECTION_CODE_TRADE_ALREADY_PAID: Final = "trade_already_paid"
# The stable code of ChannelRejected when a refund would take back more than was paid
# (counting the refunds still processing or succeeded; failed ones do not count).
REJECTION_CODE_REFUND_EXCEEDS_PAID: Final = "refund_exceeds_paid"
# The stable code of ChannelRejected when there is no paid trade to refund: the trade is
# unknown, still waiting for the payer, or closed.
REJECTION_CODE_TRADE_NOT_PAID: Final = "trade_not_paid"
# The failure code of every failed refund: Alipay gives a human-readable reason only.
REFUND_FAILURE_CODE: Final = "refund_failed"
# Alipay caps a refund reason at 256 characters; a longer one is cut, not refused.
REFUND_REASON_LENGTH_MAX: Final = 256
# A refund's failure reason is kept for people to read; a longer one is cut.
FAILURE_MESSAGE_LENGTH_MAX: Final = 256
# A callback body larger than this, or with more fields, is refused as `malformed`: a
# genuine notification is well under 2 KiB and has about 15 fields.
NOTIFICATION_BYTES_MAX: Final = 16 * 1024
NOTIFICATION_FIELD_COUNT_MAX: Final = 64
# The body of a refused callback; anything but `success` makes Alipay retry.
NOTIFICATION_REFUSAL: Final = "fail"
# A callback stamped further in the future than this is refused (see `wire`).
NOTIFICATION_FUTURE_SKEW_S_MAX: Final = wire.NOTIFICATION_FUTURE_SKEW_S_MAX
# Ids end up in contracts that cap them at 128 characters.
IDENTIFIER_LENGTH_MAX: Final = 128

# The fields every callback carries, whatever it is about.
ENVELOPE_FIELDS: Final = ("notify_id", "notify_time", "notify_type", "app_id", "sign_type", "sign")
# A trade status notification that is not a payment (e.g. an earlier status, out of order).
TRADE_STATUS_NOTIFICATION_FIELDS: Final = (
    *ENVELOPE_FIELDS,
    "trade_no",
    "out_trade_no",
    "trade_status",
)
# A payment (TRADE_SUCCESS) notification.
REQUIRED_NOTIFICATION_FIELDS: Final = (
    "notify_id",
    "notify_time",
    "notify_type",
    "app_id",
    "trade_no",
    "out_trade_no",
    "trade_status",
    "total_amount_minor",
    "currency",
    "gmt_payment",
    "sign_type",
    "sign",
)
# What describes a finished refund, in a notification and in a query answer.
REFUND_RESULT_FIELDS: Final = (
    "trade_no",
    "out_trade_no",
    "out_request_no",
    "refund_no",
    "refund_status",
    "refund_amount_minor",
    "currency",
    "gmt_refund",
)
REFUND_NOTIFICATION_FIELDS: Final = (*ENVELOPE_FIELDS, *REFUND_RESULT_FIELDS)
# Genuine trade statuses that prove no payment: acknowledged, never recorded. A paid
# trade's TRADE_SUCCESS may be followed (or preceded, out of order) by them.
IGNORED_TRADE_STATUSES: Final = frozenset(
    {
        protocol.TRADE_STATUS_WAIT_BUYER_PAY,
        protocol.TRADE_STATUS_CLOSED,
        protocol.TRADE_STATUS_FINISHED,
    }
)
_FINISHED_REFUND_STATUSES: Final = frozenset(
    {protocol.REFUND_STATUS_SUCCESS, protocol.REFUND_STATUS_FAIL}
)
_KNOWN_REFUND_STATUSES: Final = _FINISHED_REFUND_STATUSES | {protocol.REFUND_STATUS_PROCESSING}
# The only refusals of a refund the PSP may leave unsigned: it cannot sign when it does not
# know the app id or the request's own signature (or body) is broken. Any other refusal
# decides a refund's fate, so an unsigned one proves nothing.
_UNSIGNED_REFUSAL_SUB_CODES: Final = frozenset(
    {
        protocol.SUB_CODE_INVALID_APP_ID,
        protocol.SUB_CODE_INVALID_SIGNATURE,
        protocol.SUB_CODE_INVALID_PARAMETER,
    }
)


class AlipayChannel:
    """Alipay-style channel (HMAC-SHA256 over the canonical string, shared secret per app).

    The adapter does not own `http_client`; whoever created it closes it.
    """

    def __init__(
        self,
        base_url: str,
        app_id: str,
        secret: str,
        notify_url: str,
        http_client: httpx.AsyncClient,
        timeout_s: float = 5.0,
        notification_age_max_s: int = 86400,
        clock: Clock | None = None,
    ) -> None:
        invariant(timeout_s > 0, "timeout_s must be positive")
        invariant(notification_age_max_s > 0, "notification_age_max_s must be positive")
        invariant(secret != "", "the Alipay secret must not be empty")
        self._base_url = base_url.rstrip("/")
        self._app_id = app_id
        self._secret = secret
        self._notify_url = notify_url
        self._http_client = http_client
        self._timeout_s = timeout_s
        self._notification_age_max_s = notification_age_max_s
        self._clock: Clock = clock if clock is not None else SystemClock()

    async def prepare(
        self, *, payment_id: str, amount_minor: int, currency: str, description: str
    ) -> PreparedTrade:
        """Precreate the channel trade for `payment_id`; safe to retry with the same inputs.

        Raises ChannelRejected when Alipay refuses (e.g. `trade_conflict` when the same
        payment id was precreated with another amount), ChannelUnavailable on timeout,
        connection error, unexpected status, or a response whose signature does not verify.
        """
        invariant(amount_minor > 0, "amount_minor must be positive")
        request_fields = protocol.signed(
            {
                "app_id": self._app_id,
                "out_trade_no": payment_id,
                "total_amount_minor": str(amount_minor),
                "currency": currency,
                "subject": wire.trade_description(
                    description, payment_id, length_max=SUBJECT_LENGTH_MAX
                ),
                "notify_url": self._notify_url,
                "timestamp": str(int(self._clock.now().timestamp())),
                "nonce": secrets.token_hex(16),
            },
            self._secret,
        )
        response_fields = await self._post(protocol.PRECREATE_PATH, request_fields)
        return self._prepared_trade(response_fields, payment_id)

    async def close(self, *, payment_id: str) -> None:
        """Close the channel trade for `payment_id`; safe to retry.

        Returns when the trade is closed, was closed already, or never existed. Raises
        ChannelRejected with code `trade_already_paid` when the payer already paid, with
        Alipay's lowercased `sub_code` for any other refusal, and ChannelUnavailable on
        timeout, connection error, unexpected status or code, or an answer whose
        signature does not verify.
        """
        request_fields = protocol.signed(
            {
                "app_id": self._app_id,
                "out_trade_no": payment_id,
                "timestamp": str(int(self._clock.now().timestamp())),
                "nonce": secrets.token_hex(16),
            },
            self._secret,
        )
        response_fields = await self._post(protocol.CLOSE_PATH, request_fields)
        self._check_closed(response_fields, payment_id)

    async def query(self, *, payment_id: str) -> VerifiedPaymentNotification | None:
        """Query the trade of `payment_id`: the answer when no notification arrives.

        Returns the paid trade as a verified notification with id `query:<trade_no>`, or
        None while it is unpaid, closed or unknown. Raises ChannelUnavailable on timeout,
        connection error, unexpected answer, or an answer whose signature does not verify.
        """
        fields = await self._get(
            f"{protocol.TRADE_QUERY_PATH_PREFIX}{quote(payment_id, safe='')}",
            {"app_id": self._app_id},
        )
        if not protocol.verify(fields, self._secret):
            raise ChannelUnavailable("alipay query answer signature does not verify")
        code = fields.get("code", "")
        if code == protocol.CODE_BUSINESS_FAILED:
            if fields.get("sub_code") == protocol.SUB_CODE_TRADE_NOT_EXIST:
                return None
            raise ChannelUnavailable(f"alipay refused the query: {fields.get('sub_code', '')[:64]}")
        if code != protocol.CODE_SUCCESS or fields.get("out_trade_no") != payment_id:
            raise ChannelUnavailable("alipay query answer is not about this trade")
        if fields.get("trade_status") != protocol.TRADE_STATUS_SUCCESS:
            return None
        try:
            return VerifiedPaymentNotification(
                notification_id=f"query:{fields['trade_no']}",
                channel_trade_id=fields["trade_no"],
                payment_id=payment_id,
                amount_minor=wire.parse_amount_minor(fields["total_amount_minor"]),
                currency=wire.parse_currency(fields["currency"]),
                paid_at=wire.parse_utc_timestamp(
                    fields["gmt_payment"], reason="invalid_gmt_payment"
                ),
            )
        except (KeyError, InvalidNotification) as error:
            raise ChannelUnavailable(f"alipay query answer is incomplete: {error!r}") from error

    async def refund(
        self,
        *,
        payment_id: str,
        refund_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
    ) -> RefundAccepted:
        """Ask Alipay to refund `amount_minor` of the paid trade of `payment_id`.

        `refund_id` is Alipay's `out_request_no`, the refund's idempotency key: a retry
        with the same inputs returns the same RefundAccepted, also once the refund has
        finished. The result comes later, by `refund_status_sync` notification or
        `query_refund`.

        Raises ChannelRejected with code `refund_exceeds_paid` when the refunds still
        processing or succeeded plus this one would exceed the paid total,
        `trade_not_paid` when there is no paid trade (unknown, waiting or closed),
        `refund_conflict` when `refund_id` was used with another payment, amount or
        currency, and Alipay's lowercased `sub_code` for any other refusal.
        Raises ChannelUnavailable on timeout, connection error, unexpected status or
        code, or an answer (refusals included) whose signature does not verify.
        """
        invariant(amount_minor > 0, "amount_minor must be positive")
        request_fields = protocol.signed(
            {
                "app_id": self._app_id,
                "out_trade_no": payment_id,
                "out_request_no": refund_id,
                "refund_amount_minor": str(amount_minor),
                "currency": currency,
                "refund_reason": wire.trimmed(reason, length_max=REFUND_REASON_LENGTH_MAX),
                "notify_url": self._notify_url,
                "timestamp": str(int(self._clock.now().timestamp())),
                "nonce": secrets.token_hex(16),
            },
            self._secret,
        )
        response_fields = await self._post(protocol.REFUND_PATH, request_fields)
        return self._refund_accepted(response_fields, payment_id, refund_id)

    async def query_refund(
        self, *, payment_id: str, refund_id: str
    ) -> VerifiedRefundNotification | None:
        """Query the refund `refund_id` of `payment_id`: the answer when no notification
        arrives.

        Returns the finished refund (succeeded or failed) as a verified notification with
        id `query:<refund_no>`, or None while it is processing or unknown. Raises
        ChannelUnavailable on timeout, connection error, unexpected answer, or an answer
        whose signature does not verify.
        """
        fields = await self._get(
            f"{protocol.REFUND_QUERY_PATH_PREFIX}{quote(refund_id, safe='')}",
            {"app_id": self._app_id, "out_trade_no": payment_id},
        )
        if not protocol.verify(fields, self._secret):
            raise ChannelUnavailable("alipay refund query answer signature does not verify")
        code = fields.get("code", "")
        if code == protocol.CODE_BUSINESS_FAILED:
            if fields.get("sub_code") == protocol.SUB_CODE_REFUND_NOT_EXIST:
                return None
            raise ChannelUnavailable(
                f"alipay refused the refund query: {fields.get('sub_code', '')[:64]}"
            )
        if (
            code != protocol.CODE_SUCCESS
            or fields.get("out_trade_no") != payment_id
            or fields.get("out_request_no") != refund_id
        ):
            raise ChannelUnavailable("alipay refund query answer is not about this refund")
        refund_status = fields.get("refund_status", "")
        if refund_status == protocol.REFUND_STATUS_PROCESSING:
            return None
        try:
            wire.require_fields(fields, REFUND_RESULT_FIELDS)
            return _refund_result(fields, notification_id=f"query:{fields['refund_no']}")
        except InvalidNotification as error:
            raise ChannelUnavailable(
                f"alipay refund query answer is invalid: {error.reason}"
            ) from error

    def read_notification(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime
    ) -> ChannelNotification:
        """Check a callback's raw form body and say what it proves; no I/O.

        Alipay signs the form fields only, so `headers` are not used. The body must be
        strict UTF-8 `application/x-www-form-urlencoded`, at most NOTIFICATION_BYTES_MAX
        bytes and NOTIFICATION_FIELD_COUNT_MAX fields, each field once. Every callback
        is checked for its fields, sign type, app id, signature and freshness first; then:

        - `trade_status_sync` with TRADE_SUCCESS: a VerifiedPaymentNotification, exactly
          what `verify_notification` returns;
        - `trade_status_sync` with WAIT_BUYER_PAY, TRADE_CLOSED or TRADE_FINISHED: an
          IgnoredNotification with reason `trade_status_<status lowercased>`. These are
          genuine but prove no payment; they arrive e.g. out of order after TRADE_SUCCESS;
        - `refund_status_sync` with REFUND_SUCCESS or REFUND_FAIL: a
          VerifiedRefundNotification (failure code `refund_failed`, the message from
          `fail_reason`).

        Pure like `verify_notification`: replay protection is the caller's job. Raises
        InvalidNotification with `reason` `malformed` (body too large, not UTF-8, not a
        form, too many or repeated fields), any reason of `verify_notification`, or
        `unexpected_refund_status`, `invalid_gmt_refund`.
        """
        fields = _form_fields(body)
        self._authenticate_notification(fields, _required_notification_fields(fields), now)
        notify_type = fields["notify_type"]
        if notify_type == protocol.NOTIFY_TYPE_TRADE_STATUS_SYNC:
            trade_status = fields["trade_status"]
            if trade_status == protocol.TRADE_STATUS_SUCCESS:
                return _payment_notification(fields)
            if trade_status in IGNORED_TRADE_STATUSES:
                _check_identifiers(fields, ("notify_id", "trade_no", "out_trade_no"))
                return IgnoredNotification(
                    notification_id=fields["notify_id"],
                    reason=f"trade_status_{trade_status.lower()}",
                )
            raise InvalidNotification("unexpected_trade_status", trade_status[:64])
        if notify_type == protocol.NOTIFY_TYPE_REFUND_STATUS_SYNC:
            return _refund_result(fields, notification_id=fields["notify_id"])
        raise InvalidNotification("unexpected_notify_type", notify_type[:64])

    def notification_answer(self, *, accepted: bool) -> NotificationAnswer:
        """Alipay stops retrying only when the body is exactly `success`.

        Accepted: HTTP 200 `success`. Not accepted: HTTP 400 `fail`, which makes Alipay
        retry later. Alipay reads only the body, so the status code is for payrail's own
        logs and metrics; a gateway that refuses for a transient reason (e.g. a
        concurrency conflict) may answer 503 with the same `fail` body.
        """
        if accepted:
            return NotificationAnswer(status_code=200, body=protocol.NOTIFY_ACKNOWLEDGEMENT)
        return NotificationAnswer(status_code=400, body=NOTIFICATION_REFUSAL)

    def verify_notification(
        self, fields: Mapping[str, str], *, now: datetime
    ) -> VerifiedPaymentNotification:
        """Check an asynchronous payment notification's decoded fields and return what it
        proves. `read_notification`, which reads the raw body and also understands
        ignorable trade statuses and refund notifications, is what the gateway calls.

        Pure: no I/O and no memory of earlier calls, so the same notification verifies
        every time it arrives. Replay protection (a `notify_id` seen before) is the
        caller's job, by recording the notification id in the database in the same
        transaction as its effect.

        Raises InvalidNotification with `reason` one of `missing_field`,
        `unsupported_sign_type`, `wrong_app_id`, `bad_signature`, `invalid_notify_time`,
        `stale`, `from_future`, `unexpected_notify_type`, `unexpected_trade_status`
        (any status but TRADE_SUCCESS), `invalid_field`, `invalid_amount`,
        `invalid_currency`, `invalid_gmt_payment`.
        """
        self._authenticate_notification(fields, REQUIRED_NOTIFICATION_FIELDS, now)
        if fields["notify_type"] != protocol.NOTIFY_TYPE_TRADE_STATUS_SYNC:
            raise InvalidNotification("unexpected_notify_type", fields["notify_type"][:64])
        if fields["trade_status"] != protocol.TRADE_STATUS_SUCCESS:
            raise InvalidNotification("unexpected_trade_status", fields["trade_status"][:64])
        return _payment_notification(fields)

    def _authenticate_notification(
        self, fields: Mapping[str, str], required: tuple[str, ...], now: datetime
    ) -> None:
        """Check that a callback is complete, from Alipay for this app, and fresh.

        Every field in `required` must be present before anything else is looked at, so
        a callback missing a field is reported as such rather than as a bad signature.
        """
        invariant(now.tzinfo is not None, "now must be timezone-aware")
        wire.require_fields(fields, required)
        if fields["sign_type"] != protocol.SIGN_TYPE:
            raise InvalidNotification("unsupported_sign_type", fields["sign_type"][:32])
        if fields["app_id"] != self._app_id:
            raise InvalidNotification("wrong_app_id", fields["app_id"][:IDENTIFIER_LENGTH_MAX])
        if not protocol.verify(fields, self._secret):
            raise InvalidNotification("bad_signature")
        notify_time_s = wire.parse_unix_seconds(fields["notify_time"], reason="invalid_notify_time")
        wire.check_freshness(
            wire.unix_stamp_age_s(notify_time_s, now),
            age_max_s=self._notification_age_max_s,
            future_skew_s_max=NOTIFICATION_FUTURE_SKEW_S_MAX,
            stamp=f"notify_time {notify_time_s}",
        )

    async def _get(self, path: str, params: Mapping[str, str]) -> dict[str, str]:
        """GET and return the response's fields; raise ChannelUnavailable on failure."""
        return await self._exchange("GET", path, action="query", params=dict(params))

    async def _post(self, path: str, request_fields: Mapping[str, str]) -> dict[str, str]:
        """POST JSON and return the response's fields; raise ChannelUnavailable on failure."""
        return await self._exchange(
            "POST", path, action="request", json_fields=dict(request_fields)
        )

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: dict[str, str] | None = None,
        json_fields: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Send one request and return the fields of its 200 answer. Raises
        ChannelUnavailable on timeout, connection error (`alipay <action> failed`),
        another status, or an answer that is too large or not a JSON object of strings."""
        request = self._http_client.build_request(
            method,
            f"{self._base_url}{path}",
            params=params,
            json=json_fields,
            timeout=httpx.Timeout(self._timeout_s),
        )
        answer = await wire.send_bounded(
            self._http_client,
            request,
            timeout_s=self._timeout_s,
            byte_count_max=RESPONSE_BYTES_MAX,
            peer="alipay",
            action=action,
        )
        if answer.status_code != 200:
            raise wire.unavailable_status("alipay", answer.status_code)
        return _response_fields(wire.body_within_limit(answer.content, what="alipay response"))

    def _prepared_trade(self, fields: Mapping[str, str], payment_id: str) -> PreparedTrade:
        code = fields.get("code", "")
        if code == protocol.CODE_BUSINESS_FAILED:
            raise self._rejection(fields)
        if code != protocol.CODE_SUCCESS:
            raise ChannelUnavailable(f"alipay answered code {code[:16]!r}")
        if not protocol.verify(fields, self._secret):
            raise ChannelUnavailable("alipay response signature does not verify")
        if fields.get("out_trade_no") != payment_id:
            raise ChannelUnavailable("alipay response is for another out_trade_no")
        trade_no = fields.get("trade_no", "")
        pay_url = fields.get("pay_url", "")
        if trade_no == "" or pay_url == "":
            raise ChannelUnavailable("alipay response lacks trade_no or pay_url")
        return PreparedTrade(
            channel_trade_id=trade_no, pay_url=pay_url, qr_code=fields.get("qr_code") or None
        )

    def _check_closed(self, fields: Mapping[str, str], payment_id: str) -> None:
        code = fields.get("code", "")
        if code == protocol.CODE_BUSINESS_FAILED:
            self._check_close_refusal(fields)
            return
        if code != protocol.CODE_SUCCESS:
            raise ChannelUnavailable(f"alipay answered code {code[:16]!r}")
        if not protocol.verify(fields, self._secret):
            raise ChannelUnavailable("alipay response signature does not verify")
        if fields.get("out_trade_no") != payment_id:
            raise ChannelUnavailable("alipay response is for another out_trade_no")
        if fields.get("trade_status") != protocol.TRADE_STATUS_CLOSED:
            raise ChannelUnavailable("alipay response does not say the trade is closed")

    def _check_close_refusal(self, fields: Mapping[str, str]) -> None:
        """Return when the refusal means there is nothing to close; raise otherwise."""
        sub_code = fields.get("sub_code", "")
        if sub_code == protocol.SUB_CODE_TRADE_NOT_EXIST:
            # "Nothing to close" lets the caller treat the payment as closed, so unlike a
            # refusal it must be signed: the PSP verified the request, so it can sign.
            if not protocol.verify(fields, self._secret):
                raise ChannelUnavailable("alipay answer signature does not verify")
            return
        rejection = self._rejection(fields)
        if sub_code == protocol.SUB_CODE_TRADE_STATUS_ERROR and isinstance(
            rejection, ChannelRejected
        ):
            raise ChannelRejected(REJECTION_CODE_TRADE_ALREADY_PAID, rejection.message)
        raise rejection

    def _refund_accepted(
        self, fields: Mapping[str, str], payment_id: str, refund_id: str
    ) -> RefundAccepted:
        code = fields.get("code", "")
        if code == protocol.CODE_BUSINESS_FAILED:
            raise self._refund_rejection(fields)
        if code != protocol.CODE_SUCCESS:
            raise ChannelUnavailable(f"alipay answered code {code[:16]!r}")
        if not protocol.verify(fields, self._secret):
            raise ChannelUnavailable("alipay response signature does not verify")
        if fields.get("out_trade_no") != payment_id or fields.get("out_request_no") != refund_id:
            raise ChannelUnavailable("alipay response is for another refund")
        refund_no = fields.get("refund_no", "")
        if refund_no == "" or len(refund_no) > IDENTIFIER_LENGTH_MAX:
            raise ChannelUnavailable("alipay response lacks a valid refund_no")
        if fields.get("refund_status") not in _KNOWN_REFUND_STATUSES:
            raise ChannelUnavailable("alipay response has an unknown refund_status")
        return RefundAccepted(channel_refund_id=refund_no)

    def _refund_rejection(self, fields: Mapping[str, str]) -> ChannelError:
        """Map a refused refund to a stable code; a refusal that proves nothing is
        ChannelUnavailable, so the caller retries instead of giving the refund up."""
        sub_code = fields.get("sub_code", "")
        if protocol.SIGN_FIELD not in fields and sub_code not in _UNSIGNED_REFUSAL_SUB_CODES:
            return ChannelUnavailable(f"alipay refused the refund unsigned: {sub_code[:64]}")
        rejection = self._rejection(fields)
        if not isinstance(rejection, ChannelRejected):
            return rejection
        if sub_code == protocol.SUB_CODE_REFUND_AMOUNT_EXCEEDED:
            return ChannelRejected(REJECTION_CODE_REFUND_EXCEEDS_PAID, rejection.message)
        if sub_code in (protocol.SUB_CODE_TRADE_NOT_EXIST, protocol.SUB_CODE_TRADE_STATUS_ERROR):
            return ChannelRejected(REJECTION_CODE_TRADE_NOT_PAID, rejection.message)
        return rejection

    def _rejection(self, fields: Mapping[str, str]) -> ChannelError:
        # The PSP cannot sign a refusal when it does not know the app id or the request's
        # own signature failed, so an unsigned refusal is accepted. A signed one must
        # verify: a forged refusal would otherwise fail a payment the PSP accepted.
        if protocol.SIGN_FIELD in fields and not protocol.verify(fields, self._secret):
            return ChannelUnavailable("alipay refusal signature does not verify")
        sub_code = fields.get("sub_code", "") or "business_failed"
        message = fields.get("sub_msg", "") or fields.get("msg", "")
        return ChannelRejected(sub_code.lower(), message)


def _form_fields(body: bytes) -> dict[str, str]:
    """Decode a callback's urlencoded form; raise InvalidNotification `malformed` unless it
    is small, strict UTF-8 (also inside percent-escapes) and names every field once."""
    if len(body) > NOTIFICATION_BYTES_MAX:
        raise InvalidNotification("malformed", f"body is larger than {NOTIFICATION_BYTES_MAX} B")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=NOTIFICATION_FIELD_COUNT_MAX,
        )
    except ValueError as error:  # UnicodeDecodeError is a ValueError.
        raise InvalidNotification("malformed", type(error).__name__) from error
    fields = dict(pairs)
    if len(fields) != len(pairs):
        # Which of two values would count is ambiguous: refuse rather than guess.
        raise InvalidNotification("malformed", "a field appears more than once")
    return fields


def _required_notification_fields(fields: Mapping[str, str]) -> tuple[str, ...]:
    """The fields a callback must carry, by what it claims to be (checked after)."""
    notify_type = fields.get("notify_type")
    if notify_type == protocol.NOTIFY_TYPE_TRADE_STATUS_SYNC:
        if fields.get("trade_status") == protocol.TRADE_STATUS_SUCCESS:
            return REQUIRED_NOTIFICATION_FIELDS
        return TRADE_STATUS_NOTIFICATION_FIELDS
    if notify_type == protocol.NOTIFY_TYPE_REFUND_STATUS_SYNC:
        if fields.get("refund_status") == protocol.REFUND_STATUS_FAIL:
            return (*REFUND_NOTIFICATION_FIELDS, "fail_reason")
        return REFUND_NOTIFICATION_FIELDS
    return ENVELOPE_FIELDS


def _check_identifiers(fields: Mapping[str, str], names: tuple[str, ...]) -> None:
    for name in names:
        if len(fields[name]) > IDENTIFIER_LENGTH_MAX:
            raise InvalidNotification("invalid_field", f"{name} is too long")


def _payment_notification(fields: Mapping[str, str]) -> VerifiedPaymentNotification:
    """What an authenticated TRADE_SUCCESS notification proves; its fields are present."""
    _check_identifiers(fields, ("notify_id", "trade_no", "out_trade_no"))
    return VerifiedPaymentNotification(
        notification_id=fields["notify_id"],
        channel_trade_id=fields["trade_no"],
        payment_id=fields["out_trade_no"],
        amount_minor=wire.parse_amount_minor(fields["total_amount_minor"]),
        currency=wire.parse_currency(fields["currency"]),
        paid_at=wire.parse_utc_timestamp(fields["gmt_payment"], reason="invalid_gmt_payment"),
    )


def _refund_result(
    fields: Mapping[str, str], *, notification_id: str
) -> VerifiedRefundNotification:
    """What an authenticated refund notification or query answer proves about a finished
    refund; the REFUND_RESULT_FIELDS are present. A REFUND_FAIL needs its `fail_reason`."""
    _check_identifiers(fields, ("trade_no", "out_trade_no", "out_request_no", "refund_no"))
    if len(notification_id) > IDENTIFIER_LENGTH_MAX:
        raise InvalidNotification("invalid_field", "the notification id is too long")
    refund_status = fields["refund_status"]
    if refund_status not in _FINISHED_REFUND_STATUSES:
        raise InvalidNotification("unexpected_refund_status", refund_status[:64])
    succeeded = refund_status == protocol.REFUND_STATUS_SUCCESS
    failure_message = ""
    if not succeeded:
        failure_message = wire.message_text(
            fields.get("fail_reason", ""), length_max=FAILURE_MESSAGE_LENGTH_MAX
        )
        if failure_message == "":
            raise InvalidNotification("missing_field", "fail_reason")
    return VerifiedRefundNotification(
        notification_id=notification_id,
        refund_id=fields["out_request_no"],
        payment_id=fields["out_trade_no"],
        channel_refund_id=fields["refund_no"],
        amount_minor=wire.parse_amount_minor(fields["refund_amount_minor"]),
        currency=wire.parse_currency(fields["currency"]),
        succeeded=succeeded,
        finished_at=wire.parse_utc_timestamp(fields["gmt_refund"], reason="invalid_gmt_refund"),
        failure_code=None if succeeded else REFUND_FAILURE_CODE,
        failure_message=failure_message,
    )


def _response_fields(content: bytes) -> dict[str, str]:
    """Decode a JSON object whose values are all strings; raise ChannelUnavailable otherwise."""
    try:
        decoded = json.loads(content)
    except ValueError as error:
        raise ChannelUnavailable("alipay response is not JSON") from error
    if not isinstance(decoded, dict) or not all(
        isinstance(value, str) for value in decoded.values()
    ):
        raise ChannelUnavailable("alipay response is not a JSON object of strings")
    return decoded
