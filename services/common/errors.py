"""What an error is: one that may pass (retry it) or one that never will (park the message).

Consumers and background loops retry a transient error with capped, jittered backoff and
never dead-letter the message behind it: a database restart, a failover, a full disk or a
broker election must delay work, not lose it. Everything else is permanent for that
message.
"""

from __future__ import annotations

import random

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from services.common.event_store import ConcurrencyConflict


class TransientError(Exception):
    """Raised by a handler when the same message may succeed later (a channel timed out)."""


# SQLSTATE classes that say "try again": 08 connection exception, 40 transaction rollback
# (serialization failure, deadlock), 53 insufficient resources (disk full, out of memory,
# too many connections), 57 operator intervention (admin or crash shutdown, cannot connect
# now, query cancelled), 58 system error (I/O error). 25006 is a read-only transaction: a
# standby that is about to be promoted, or a connection that reached the old primary.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
TRANSIENT_SQLSTATES = frozenset({"25006"})

# Client-side asyncpg errors that say the connection went away, as opposed to the
# caller's mistake (DataError: an argument of the wrong type).
_PERMANENT_INTERFACE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.exceptions.ClientConfigurationError,
)


def _is_transient_sqlstate(sqlstate: object) -> bool:
    return isinstance(sqlstate, str) and (
        sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES or sqlstate in TRANSIENT_SQLSTATES
    )


def _transient_postgres_error_classes() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    pending: list[type[BaseException]] = [asyncpg.PostgresError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if _is_transient_sqlstate(getattr(cls, "sqlstate", None)):
            found.append(cls)
    return tuple(found)


# For `except TRANSIENT_ERRORS:` in loops; `is_transient` also reads the SQLSTATE of an
# error whose code asyncpg has no class for, and the retriable flag of broker errors.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    ConcurrencyConflict,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    KafkaConnectionError,
    KafkaTimeoutError,
    *_transient_postgres_error_classes(),
)


def is_transient(error: BaseException) -> bool:
    """True when the same work may succeed if tried again later."""
    if isinstance(error, _PERMANENT_INTERFACE_ERRORS):
        return False
    if isinstance(error, TRANSIENT_ERRORS):
        return True
    if isinstance(error, asyncpg.PostgresError):
        return _is_transient_sqlstate(getattr(error, "sqlstate", None))
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False))
    return False


def backoff_s(attempt: int, *, initial_s: float, maximum_s: float) -> float:
    """Capped exponential backoff with full jitter for retry number `attempt` (1-based).

    Jitter keeps many consumers that failed together (a database restart) from retrying
    in step.
    """
    ceiling_s = min(maximum_s, initial_s * 2 ** min(attempt - 1, 30))
    return random.uniform(ceiling_s / 2, ceiling_s)
