"""The Alipay channel adapter: precreate and close trades, verify Alipay's payment callbacks.

The same adapter talks to the real channel and to payrail's PSP simulator; only
`base_url`, `app_id` and `secret` differ.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import httpx

from services.common.clock import Clock, SystemClock
from services.common.invariant import invariant
from services.gateway.channels import alipay_protocol as protocol
from services.gateway.channels.base import (
    ChannelError,
    ChannelRejected,
    ChannelUnavailable,
    InvalidNotification,
    PreparedTrade,
    VerifiedPaymentNotification,
)

# Alipay caps a trade subject at 256 characters; longer descriptions are cut, not refused,
# because the subject is only shown to the payer.
SUBJECT_LENGTH_MAX: Final = 256
# The longest response body the adapter accepts; a precreate answer is a few hundred bytes.
RESPONSE_BYTES_MAX: Final = 64 * 1024
# The stable code of ChannelRejected when a trade cannot be closed because it is paid.
REJECTION_CODE_TRADE_ALREADY_PAID: Final = "trade_already_paid"
# A callback stamped further in the future than this is refused: clocks drift, but not
# by minutes, and a far-future stamp would stay "fresh" for longer than intended.
NOTIFICATION_FUTURE_SKEW_S_MAX: Final = 300
# Ids end up in contracts that cap them at 128 characters.
IDENTIFIER_LENGTH_MAX: Final = 128

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

# Up to 18 digits keeps every amount inside a signed 64-bit integer; no sign, no leading
# zero, no decimal point: minor units are whole numbers.
_AMOUNT_PATTERN: Final = re.compile(r"[1-9][0-9]{0,17}")
_CURRENCY_PATTERN: Final = re.compile(r"[A-Z]{3}")
_UNIX_SECONDS_PATTERN: Final = re.compile(r"[0-9]{1,12}")
_TIMESTAMP_LENGTH_MAX: Final = 64


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
                "subject": _subject(description, payment_id),
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
        url = f"{self._base_url}{protocol.TRADE_QUERY_PATH_PREFIX}{payment_id}"
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._http_client.get(
                    url,
                    params={"app_id": self._app_id},
                    timeout=httpx.Timeout(self._timeout_s),
                    follow_redirects=False,
                )
        except TimeoutError as error:
            raise ChannelUnavailable(f"alipay did not answer within {self._timeout_s} s") from error
        except httpx.HTTPError as error:
            raise ChannelUnavailable(f"alipay query failed: {type(error).__name__}") from error
        if response.status_code != 200:
            raise ChannelUnavailable(f"alipay answered HTTP {response.status_code}")
        fields = _response_fields(response.content)
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
                amount_minor=_parse_amount_minor(fields["total_amount_minor"]),
                currency=_parse_currency(fields["currency"]),
                paid_at=_parse_paid_at(fields["gmt_payment"]),
            )
        except (KeyError, InvalidNotification) as error:
            raise ChannelUnavailable(f"alipay query answer is incomplete: {error!r}") from error

    def verify_notification(
        self, fields: Mapping[str, str], *, now: datetime
    ) -> VerifiedPaymentNotification:
        """Check an asynchronous notification and return what it proves.

        Pure: no I/O and no memory of earlier calls, so the same notification verifies
        every time it arrives. Replay protection (a `notify_id` seen before) is the
        caller's job, by recording the notification id in the database in the same
        transaction as its effect.

        Raises InvalidNotification with `reason` one of `missing_field`,
        `unsupported_sign_type`, `wrong_app_id`, `bad_signature`, `invalid_notify_time`,
        `stale`, `from_future`, `unexpected_notify_type`, `unexpected_trade_status`,
        `invalid_field`, `invalid_amount`, `invalid_currency`, `invalid_gmt_payment`.
        """
        invariant(now.tzinfo is not None, "now must be timezone-aware")
        missing = [name for name in REQUIRED_NOTIFICATION_FIELDS if fields.get(name, "") == ""]
        if missing:
            raise InvalidNotification("missing_field", ", ".join(missing))
        if fields["sign_type"] != protocol.SIGN_TYPE:
            raise InvalidNotification("unsupported_sign_type", fields["sign_type"][:32])
        if fields["app_id"] != self._app_id:
            raise InvalidNotification("wrong_app_id", fields["app_id"][:IDENTIFIER_LENGTH_MAX])
        if not protocol.verify(fields, self._secret):
            raise InvalidNotification("bad_signature")
        _check_notify_time(fields["notify_time"], now, self._notification_age_max_s)
        if fields["notify_type"] != protocol.NOTIFY_TYPE_TRADE_STATUS_SYNC:
            raise InvalidNotification("unexpected_notify_type", fields["notify_type"][:64])
        if fields["trade_status"] != protocol.TRADE_STATUS_SUCCESS:
            raise InvalidNotification("unexpected_trade_status", fields["trade_status"][:64])
        for name in ("notify_id", "trade_no", "out_trade_no"):
            if len(fields[name]) > IDENTIFIER_LENGTH_MAX:
                raise InvalidNotification("invalid_field", f"{name} is too long")
        return VerifiedPaymentNotification(
            notification_id=fields["notify_id"],
            channel_trade_id=fields["trade_no"],
            payment_id=fields["out_trade_no"],
            amount_minor=_parse_amount_minor(fields["total_amount_minor"]),
            currency=_parse_currency(fields["currency"]),
            paid_at=_parse_paid_at(fields["gmt_payment"]),
        )

    async def _post(self, path: str, request_fields: Mapping[str, str]) -> dict[str, str]:
        """POST JSON and return the response's fields; raise ChannelUnavailable on failure."""
        url = f"{self._base_url}{path}"
        try:
            # httpx's timeout bounds each phase (connect, write, read); the outer one
            # bounds the whole exchange.
            async with asyncio.timeout(self._timeout_s):
                response = await self._http_client.post(
                    url,
                    json=dict(request_fields),
                    timeout=httpx.Timeout(self._timeout_s),
                    follow_redirects=False,
                )
        except TimeoutError as error:
            raise ChannelUnavailable(f"alipay did not answer within {self._timeout_s} s") from error
        except httpx.HTTPError as error:
            raise ChannelUnavailable(f"alipay request failed: {type(error).__name__}") from error
        if response.status_code != 200:
            raise ChannelUnavailable(f"alipay answered HTTP {response.status_code}")
        return _response_fields(response.content)

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

    def _rejection(self, fields: Mapping[str, str]) -> ChannelError:
        # The PSP cannot sign a refusal when it does not know the app id or the request's
        # own signature failed, so an unsigned refusal is accepted. A signed one must
        # verify: a forged refusal would otherwise fail a payment the PSP accepted.
        if protocol.SIGN_FIELD in fields and not protocol.verify(fields, self._secret):
            return ChannelUnavailable("alipay refusal signature does not verify")
        sub_code = fields.get("sub_code", "") or "business_failed"
        message = fields.get("sub_msg", "") or fields.get("msg", "")
        return ChannelRejected(sub_code.lower(), message)


def _parse_amount_minor(text: str) -> int:
    """Return the positive integer amount in `text`; raise InvalidNotification otherwise.

    Only plain decimal digits without a leading zero are accepted: no sign, no decimal
    point, no whitespace, no exponent.
    """
    if _AMOUNT_PATTERN.fullmatch(text) is None:
        raise InvalidNotification("invalid_amount", text[:32])
    return int(text)


def _subject(description: str, payment_id: str) -> str:
    subject = description.strip() or f"payrail payment {payment_id}"
    return subject[:SUBJECT_LENGTH_MAX]


def _response_fields(content: bytes) -> dict[str, str]:
    """Decode a JSON object whose values are all strings; raise ChannelUnavailable otherwise."""
    if len(content) > RESPONSE_BYTES_MAX:
        raise ChannelUnavailable("alipay response is too large")
    try:
        decoded = json.loads(content)
    except ValueError as error:
        raise ChannelUnavailable("alipay response is not JSON") from error
    if not isinstance(decoded, dict) or not all(
        isinstance(value, str) for value in decoded.values()
    ):
        raise ChannelUnavailable("alipay response is not a JSON object of strings")
    return decoded


def _check_notify_time(text: str, now: datetime, age_max_s: int) -> None:
    if _UNIX_SECONDS_PATTERN.fullmatch(text) is None:
        raise InvalidNotification("invalid_notify_time", text[:32])
    notify_time_s = int(text)
    now_s = int(now.timestamp())
    if now_s - notify_time_s > age_max_s:
        raise InvalidNotification(
            "stale", f"notify_time {notify_time_s} is older than {age_max_s} s"
        )
    if notify_time_s - now_s > NOTIFICATION_FUTURE_SKEW_S_MAX:
        raise InvalidNotification("from_future", f"notify_time {notify_time_s} is ahead of now")


def _parse_currency(text: str) -> str:
    if _CURRENCY_PATTERN.fullmatch(text) is None:
        raise InvalidNotification("invalid_currency", text[:16])
    return text


def _parse_paid_at(text: str) -> datetime:
    """Parse ISO-8601 with an offset and return it in UTC; naive times are refused."""
    if len(text) > _TIMESTAMP_LENGTH_MAX:
        raise InvalidNotification("invalid_gmt_payment", "too long")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise InvalidNotification("invalid_gmt_payment", text) from error
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidNotification("invalid_gmt_payment", f"{text} has no UTC offset")
    return parsed.astimezone(UTC)
