"""The notifier's pure rules: what a webhook says, who gets it and when it is retried.

Nothing here touches the database, the network or the clock; callers pass time in.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from schemas.envelope import Event
from schemas.operations import PLATFORM_MERCHANT_ID
from schemas.public_events import (
    OPS_EVENT_TYPES,
    PUBLIC_EVENT_TYPES,
    NotPublic,
    public_event_document,
    public_event_type,
)

WILDCARD = "*"

# Merchants may subscribe to every public event (schemas/public_events.py); operations'
# alerts go to the ops endpoint only.
WEBHOOK_EVENT_TYPES = {**PUBLIC_EVENT_TYPES, **OPS_EVENT_TYPES}
SUBSCRIBABLE_EVENT_TYPES: frozenset[str] = frozenset(PUBLIC_EVENT_TYPES.values())
OPS_ENDPOINT_ID = "we_ops"
# The owner of the ops endpoint and of the events sent to it: the platform, as on the
# operations events the services record.
OPS_MERCHANT_ID = PLATFORM_MERCHANT_ID

# Stripe's limit: more endpoints per merchant are a configuration mistake, and the limit
# bounds the work one event causes in the consumer.
ENDPOINT_COUNT_MAX_PER_MERCHANT = 16
URL_LENGTH_MAX = 2_048
RESPONSE_EXCERPT_LENGTH_MAX = 500
ERROR_TEXT_LENGTH_MAX = 1_000


class DeliveryStatus(StrEnum):
    """A delivery is `pending` until one attempt succeeds or the schedule is exhausted."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class NotifierError(ValueError):
    """Base of the notifier's expected input errors; `code` is stable and machine-readable."""

    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidUrl(NotifierError):
    """A webhook endpoint URL that is not an absolute http(s) URL with a host."""

    code = "invalid_url"


class PrivateTarget(InvalidUrl):
    """A webhook URL whose host is (or resolves to) a loopback, private, link-local or
    otherwise non-public address, and is not on the allow-list: no SSRF through webhooks."""

    code = "webhook_target_not_allowed"


class InvalidEvents(NotifierError):
    """An endpoint's event list is empty or names an event type merchants cannot subscribe to."""

    code = "invalid_events"


# An event type that no webhook exists for. A wiring mistake, never merchant input.
UnsupportedEvent = NotPublic


# The dotted webhook type of an event, e.g. `payment.succeeded`; raises UnsupportedEvent.
webhook_event_type = public_event_type


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may be sent to `address`: a globally routable unicast address.

    Loopback, private (RFC 1918, unique local), link-local (cloud metadata lives there),
    shared (CGNAT), reserved, unspecified and multicast addresses are not; an IPv4 address
    mapped into IPv6 is judged as the IPv4 address it carries.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_public_host(host: str, allowed_hosts: Collection[str]) -> None:
    """Refuse a host that names a non-public address without resolving it: a literal IP
    that is not public, or `localhost`. Hosts on `allowed_hosts` (exact, lower case) pass.

    Raises PrivateTarget. Names are checked again, resolved, when a webhook is sent.
    """
    name = host.lower().rstrip(".")
    if name in allowed_hosts:
        return
    if name == "localhost" or name.endswith(".localhost"):
        raise PrivateTarget(f"webhook host {host!r} is the local machine")
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return  # a name: resolved and checked before every attempt
    if not is_public_address(address):
        raise PrivateTarget(f"webhook host {host!r} is not a public address")


def check_endpoint_url(url: str) -> str:
    """Return `url` when it is an absolute http(s) URL with a host.

    Raises InvalidUrl otherwise.
    """
    if len(url) > URL_LENGTH_MAX:
        raise InvalidUrl(f"url is longer than {URL_LENGTH_MAX} characters")
    if url != url.strip() or any(character.isspace() or ord(character) < 32 for character in url):
        raise InvalidUrl("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port raises ValueError when it is not a number
    except ValueError as error:
        raise InvalidUrl(f"url is not a valid URL: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise InvalidUrl("url must use http or https")
    if not parts.hostname:
        raise InvalidUrl("url must name a host")
    return url


def check_subscription(events: Sequence[str]) -> tuple[str, ...]:
    """Return the endpoint's event list without duplicates, in the order given.

    `["*"]` subscribes to every event type, present and future. Raises InvalidEvents for
    an empty list, an unknown type, or `*` mixed with named types.
    """
    if not events:
        raise InvalidEvents("events must name at least one event type, or '*'")
    unique = tuple(dict.fromkeys(events))
    if WILDCARD in unique and len(unique) > 1:
        raise InvalidEvents("'*' already subscribes to every event type; list it alone")
    unknown = [name for name in unique if name != WILDCARD and name not in SUBSCRIBABLE_EVENT_TYPES]
    if unknown:
        raise InvalidEvents(
            f"unknown event types {unknown}; known: {sorted(SUBSCRIBABLE_EVENT_TYPES)} or '*'"
        )
    return unique


def subscribes_to(endpoint_events: Sequence[str], event_type: str) -> bool:
    """True when an endpoint subscribed to `endpoint_events` should receive `event_type`."""
    return WILDCARD in endpoint_events or event_type in endpoint_events


def webhook_body(event: Event) -> bytes:
    """Return the exact JSON bytes (compact, UTF-8) every attempt of this webhook sends:
    the public event document, the same one `GET /v1/events/{id}` returns.

    Raises UnsupportedEvent for an event class merchants cannot subscribe to.
    """
    document = public_event_document(event)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def next_attempt_delay_ms(attempt_count: int, schedule: Sequence[int]) -> int | None:
    """Return how long to wait before the next attempt after `attempt_count` attempts.

    `schedule` holds one delay per attempt: entry 0 before the first attempt, entry n
    after the n-th. None means the schedule is exhausted and the delivery has failed.
    Raises ValueError for a negative `attempt_count` or a negative delay.
    """
    if attempt_count < 0:
        raise ValueError(f"attempt_count must not be negative, got {attempt_count}")
    if attempt_count >= len(schedule):
        return None
    delay_ms = schedule[attempt_count]
    if delay_ms < 0:
        raise ValueError(f"schedule entry {attempt_count} is negative: {delay_ms}")
    return delay_ms


def is_success_status(status_code: int) -> bool:
    """Only a 2xx answer acknowledges a webhook; redirects are not followed."""
    return 200 <= status_code <= 299


@dataclass(frozen=True)
class AttemptOutcome:
    """Where a delivery stands after one attempt."""

    status: DeliveryStatus
    next_attempt_delay_ms: int | None  # None unless the status is still pending.


def decide_after_attempt(
    attempt_count: int, succeeded: bool, schedule: Sequence[int]
) -> AttemptOutcome:
    """Decide a delivery's state after its `attempt_count`-th attempt (counting from 1).

    Raises ValueError when `attempt_count` is below 1.
    """
    if attempt_count < 1:
        raise ValueError(f"an attempt was made, so attempt_count >= 1, got {attempt_count}")
    if succeeded:
        return AttemptOutcome(DeliveryStatus.SUCCEEDED, None)
    delay_ms = next_attempt_delay_ms(attempt_count, schedule)
    if delay_ms is None:
        return AttemptOutcome(DeliveryStatus.FAILED, None)
    return AttemptOutcome(DeliveryStatus.PENDING, delay_ms)


def truncate(text: str, length_max: int) -> str:
    """`text` cut to at most `length_max` characters."""
    return text[:length_max]


def failing_since_after(
    failing_since: datetime | None, attempted_at: datetime, succeeded: bool
) -> datetime | None:
    """When an endpoint's current run of failures began, after one more attempt: a success
    ends the run (None); a failure starts one at `attempted_at` or continues the current."""
    if succeeded:
        return None
    if failing_since is None or attempted_at < failing_since:
        return attempted_at
    return failing_since


def should_disable(failing_since: datetime | None, now: datetime, disable_after_ms: int) -> bool:
    """Whether an endpoint that has failed every attempt since `failing_since` has failed
    long enough to be disabled. `disable_after_ms` 0 never disables."""
    if failing_since is None or disable_after_ms <= 0:
        return False
    return now - failing_since >= timedelta(milliseconds=disable_after_ms)


def disabled_reason(failing_since: datetime, now: datetime) -> str:
    """Why an endpoint was disabled, for the merchant and operations."""
    hours = (now - failing_since).total_seconds() / 3600
    return f"every delivery attempt failed for {hours:.2f} hours, since {failing_since.isoformat()}"


class ReplayRangeInvalid(NotifierError):
    """A replay's time range is empty, reversed or too long."""

    code = "invalid_replay_range"


# A replay queues one delivery per event in its range; more events than this need several
# smaller ranges, so one request cannot flood the queue.
REPLAY_EVENT_COUNT_MAX = 10_000
REPLAY_RANGE_MAX = timedelta(days=31)


def check_replay_range(start: datetime, end: datetime) -> None:
    """Accept a replay range [start, end): start before end, at most REPLAY_RANGE_MAX long.

    Raises ReplayRangeInvalid."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ReplayRangeInvalid("from and to must carry a time zone")
    if start >= end:
        raise ReplayRangeInvalid("from must be before to")
    if end - start > REPLAY_RANGE_MAX:
        raise ReplayRangeInvalid(f"a replay covers at most {REPLAY_RANGE_MAX.days} days")
