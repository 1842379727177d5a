"""The wire toolkit every channel adapter shares: how an answer is read, how fields are
parsed, how a notification's age is judged, how free text is cut, and how an HTTP status
is classified.

The toolkit holds the mechanism; each adapter keeps its own rules and passes them in:
which statuses are a definite refusal (the bank's 400 and 422, the card acquirer's 422,
WeChat Pay's 4xx but the inconclusive ones), which channel codes are renamed, how long a
description may be, how old a notification may be. Apart from `read_at_most` and
`send_bounded`, which consume an HTTP answer, every function is pure.

Errors follow `base`: an answer that leaves the outcome unknown is ChannelUnavailable, a
definite refusal is ChannelRejected, and a field a notification must not be trusted with
is InvalidNotification with a stable `reason`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, TypeGuard

import httpx

from services.gateway.channels.base import ChannelRejected, ChannelUnavailable, InvalidNotification

# Up to 18 digits keeps every amount inside a signed 64-bit integer.
AMOUNT_MINOR_MAX: Final = 10**18 - 1
# A timestamp on the wire is a few dozen characters; a longer one is not parsed at all.
TIMESTAMP_LENGTH_MAX: Final = 64
# A notification stamped further in the future than this is refused: clocks drift, but
# not by minutes, and a far-future stamp would stay "fresh" for longer than intended.
NOTIFICATION_FUTURE_SKEW_S_MAX: Final = 300
# The statuses of an answer that did what was asked.
SUCCESS_STATUSES: Final = range(200, 300)
CLIENT_ERROR_STATUSES: Final = range(400, 500)

# Plain decimal digits without a leading zero: no sign, no decimal point, no whitespace,
# no exponent. Minor units are whole numbers, and 18 digits stay within AMOUNT_MINOR_MAX.
_AMOUNT_MINOR_PATTERN: Final = re.compile(r"[1-9][0-9]{0,17}")
_CURRENCY_PATTERN: Final = re.compile(r"[A-Z]{3}")
_UNIX_SECONDS_PATTERN: Final = re.compile(r"[0-9]{1,12}")


class AnswerOutcome(StrEnum):
    """What an answer's HTTP status says about the request."""

    SUCCEEDED = "succeeded"
    # The channel looked at the request and refused it for good: ChannelRejected.
    REFUSED = "refused"
    # Anything else (a proxy, a throttle, a 5xx): the request may have been carried out,
    # so the outcome is unknown: ChannelUnavailable, and the same request is sent again.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class BoundedAnswer:
    """An HTTP answer whose body was read up to a limit; `content` is None when the body
    was longer than that limit (its reading stopped there)."""

    status_code: int
    headers: httpx.Headers
    content: bytes | None


async def read_at_most(response: httpx.Response, byte_count_max: int) -> bytes | None:
    """Return the whole body of a streamed `response`, or None as soon as it exceeds
    `byte_count_max` bytes; the rest is never read. Raises what httpx raises while
    reading (httpx.HTTPError)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > byte_count_max:
            return None
    return bytes(body)


def body_within_limit(content: bytes | None, *, what: str) -> bytes:
    """Return `content`, the result of `read_at_most`; raise ChannelUnavailable
    (`<what> is too large`) when it is None: an answer too large to read proves nothing."""
    if content is None:
        raise ChannelUnavailable(f"{what} is too large")
    return content


async def send_bounded(
    http_client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    timeout_s: float,
    byte_count_max: int,
    peer: str,
    action: str = "request",
) -> BoundedAnswer:
    """Send `request` and read at most `byte_count_max` bytes of its answer, the whole
    exchange within `timeout_s`; redirects are not followed.

    A body over the limit is not an error here (its `content` is None, see
    `body_within_limit`), so the caller decides whether the status or the size speaks
    first. Raises ChannelUnavailable when `peer` did not answer within `timeout_s`
    (`<peer> did not answer within <timeout_s> s`) or the exchange failed
    (`<peer> <action> failed: <error type>`).
    """
    try:
        # httpx's timeout bounds each phase (connect, write, read); the outer one bounds
        # the whole exchange.
        async with asyncio.timeout(timeout_s):
            response = await http_client.send(request, stream=True, follow_redirects=False)
            try:
                content = await read_at_most(response, byte_count_max)
            finally:
                await response.aclose()
    except TimeoutError as error:
        raise ChannelUnavailable(f"{peer} did not answer within {timeout_s} s") from error
    except httpx.HTTPError as error:
        raise ChannelUnavailable(f"{peer} {action} failed: {type(error).__name__}") from error
    return BoundedAnswer(
        status_code=response.status_code, headers=response.headers, content=content
    )


def json_object(content: bytes) -> dict[str, object] | None:
    """Return the JSON object in `content`, or None when it is not JSON or not an object."""
    try:
        decoded = json.loads(content)
    except ValueError:  # UnicodeDecodeError is a ValueError.
        return None
    return decoded if isinstance(decoded, dict) else None


def required_field(fields: Mapping[str, object], name: str) -> object:
    """Return the value of `name`; raise InvalidNotification `missing_field` when it is
    absent, null or the empty string."""
    value = fields.get(name)
    if value is None or value == "":
        raise InvalidNotification("missing_field", name)
    return value


def require_fields(fields: Mapping[str, object], names: Iterable[str]) -> None:
    """Check that every field in `names` is present, not null and not empty; raise
    InvalidNotification `missing_field` naming all the missing ones otherwise."""
    missing = [name for name in names if fields.get(name) in (None, "")]
    if missing:
        raise InvalidNotification("missing_field", ", ".join(missing))


def required_text(fields: Mapping[str, object], name: str, *, length_max: int) -> str:
    """Return the string value of `name`. Raises InvalidNotification `missing_field` when
    it is absent or empty, `invalid_field` when it is not a string or is longer than
    `length_max` characters."""
    value = required_field(fields, name)
    if not isinstance(value, str):
        raise InvalidNotification("invalid_field", f"{name} is not a string")
    if len(value) > length_max:
        raise InvalidNotification("invalid_field", f"{name} is too long")
    return value


def parse_amount_minor(text: str) -> int:
    """Return the positive amount in minor units written in `text`; raise
    InvalidNotification `invalid_amount` unless it is plain decimal digits without a
    leading zero (no sign, no decimal point, no whitespace, no exponent), at most 18."""
    if _AMOUNT_MINOR_PATTERN.fullmatch(text) is None:
        raise InvalidNotification("invalid_amount", text[:32])
    return int(text)


def is_amount_minor(value: object, *, amount_minor_max: int = AMOUNT_MINOR_MAX) -> TypeGuard[int]:
    """Whether a decoded JSON value is a positive whole amount in minor units of at most
    `amount_minor_max`: an int, not a bool, not a float, not a string."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= amount_minor_max


def is_currency_code(value: object) -> TypeGuard[str]:
    """Whether `value` looks like an ISO 4217 currency code: three capital letters."""
    return isinstance(value, str) and _CURRENCY_PATTERN.fullmatch(value) is not None


def parse_currency(text: str) -> str:
    """Return `text` when it is an ISO 4217 code; raise InvalidNotification
    `invalid_currency` otherwise."""
    if not is_currency_code(text):
        raise InvalidNotification("invalid_currency", text[:16])
    return text


def parse_unix_seconds(text: str, *, reason: str) -> int:
    """Return the Unix time in whole seconds written in `text` (1 to 12 digits); raise
    InvalidNotification with `reason` (e.g. `invalid_notify_time`) otherwise."""
    if _UNIX_SECONDS_PATTERN.fullmatch(text) is None:
        raise InvalidNotification(reason, text[:32])
    return int(text)


def parse_utc_timestamp(text: str, *, reason: str) -> datetime:
    """Parse ISO 8601 / RFC 3339 with a UTC offset and return it as an aware datetime in
    UTC. Raises InvalidNotification with `reason` (e.g. `invalid_gmt_payment`) when the
    text is longer than TIMESTAMP_LENGTH_MAX, is not a timestamp, or is naive (has no
    offset): a naive time could mean any zone, so it is refused rather than guessed."""
    if len(text) > TIMESTAMP_LENGTH_MAX:
        raise InvalidNotification(reason, "too long")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise InvalidNotification(reason, text) from error
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidNotification(reason, f"{text} has no UTC offset")
    return parsed.astimezone(UTC)


def unix_stamp_age_s(stamped_s: int, now: datetime) -> int:
    """How many whole seconds before `now` (aware) the Unix time `stamped_s` is;
    negative for a stamp ahead of `now`. `now` is cut to whole seconds first, like the
    stamp."""
    return int(now.timestamp()) - stamped_s


def check_freshness(
    age_s: float,
    *,
    age_max_s: float,
    future_skew_s_max: float = NOTIFICATION_FUTURE_SKEW_S_MAX,
    stamp: str,
) -> None:
    """Check a notification's age: at most `age_max_s` old, and at most
    `future_skew_s_max` ahead of now (a negative `age_s`). Both limits are inclusive.

    `stamp` names the stamp in the error's detail (e.g. `notify_time 1740830400`). Raises
    InvalidNotification `stale` for an older one, `from_future` for one further ahead.
    """
    if age_s > age_max_s:
        raise InvalidNotification("stale", f"{stamp} is older than {age_max_s} s")
    if -age_s > future_skew_s_max:
        raise InvalidNotification("from_future", f"{stamp} is ahead of now")


def trade_description(description: str, payment_id: str, *, length_max: int) -> str:
    """The description a channel shows the payer: `description` without surrounding
    white space, or `payrail payment <payment_id>` when that leaves nothing, cut (not
    refused) at `length_max` characters."""
    text = description.strip() or f"payrail payment {payment_id}"
    return text[:length_max]


def trimmed(text: str, *, length_max: int) -> str:
    """`text` without surrounding white space, cut (not refused) at `length_max`
    characters; for free text such as a refund's reason."""
    return text.strip()[:length_max]


def message_text(value: object, *, length_max: int) -> str:
    """A message copied from a channel's answer into an error or a result: the string cut
    at `length_max` characters, or the empty string when `value` is not a string."""
    return value[:length_max] if isinstance(value, str) else ""


def classify_status(
    status_code: int,
    *,
    refusal_statuses: Container[int],
    success_statuses: Container[int] = SUCCESS_STATUSES,
) -> AnswerOutcome:
    """Say what an answer's status means, by the channel's own tables: SUCCEEDED for one of
    `success_statuses`, REFUSED for one of `refusal_statuses`, UNKNOWN for any other."""
    if status_code in success_statuses:
        return AnswerOutcome.SUCCEEDED
    if status_code in refusal_statuses:
        return AnswerOutcome.REFUSED
    return AnswerOutcome.UNKNOWN


def client_error_statuses(*, inconclusive: Collection[int] = ()) -> frozenset[int]:
    """Every 4xx status but the `inconclusive` ones: the table of a channel whose 4xx
    answers are definite refusals except those that say nothing final (e.g. 408, 429)."""
    return frozenset(CLIENT_ERROR_STATUSES) - frozenset(inconclusive)


def unavailable_status(peer: str, status_code: int) -> ChannelUnavailable:
    """The error for an answer whose status leaves the outcome unknown:
    ChannelUnavailable `<peer> answered HTTP <status_code>`, to be raised by the caller."""
    return ChannelUnavailable(f"{peer} answered HTTP {status_code}")


def rejection(
    code: str, message: object, *, renamed_codes: Mapping[str, str], message_length_max: int
) -> ChannelRejected:
    """The ChannelRejected for a definite refusal with the channel's error `code`: the
    adapter's stable code from `renamed_codes`, else the channel's code lowercased; its
    message is `message_text(message)`. To be raised by the caller."""
    return ChannelRejected(
        renamed_codes.get(code, code.lower()),
        message_text(message, length_max=message_length_max),
    )
