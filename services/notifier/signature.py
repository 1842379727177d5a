"""Webhook signatures: how payrail signs a delivery and how a receiver checks it.

Every webhook request carries a header such as

    Payrail-Signature: t=1717000000,v1=5257a869e7ec...(64 lowercase hex digits)

where `t` is the Unix time (seconds) at which the request was sent and each `v1` is the
lowercase hex HMAC-SHA256 of the bytes `<t>.<raw request body>` keyed with the endpoint's
signing secret (the whole `whsec_...` string, UTF-8 encoded). While a secret is being
rotated, a header may carry several `v1` entries, one per active secret.

To verify a request, a receiver:

1. reads the raw body bytes exactly as received (before any JSON parsing or
   re-serialisation, which would change the bytes);
2. calls `verify(header, body, [secret], now=int(time.time()))`, passing every secret it
   currently accepts during a rotation;
3. answers 2xx quickly and processes the event afterwards, de-duplicating by the
   `Payrail-Event-Id` header (payrail delivers at least once).

`verify` rejects a timestamp further than `tolerance_s` (default five minutes) from `now`
in either direction, which bounds how long a captured request can be replayed. Signatures
are compared in constant time. This module is pure and depends only on the standard
library, so receivers may copy it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_SCHEME = "v1"
HEADER_LENGTH_MAX = 4_096
HEADER_ENTRY_COUNT_MAX = 16
DEFAULT_TOLERANCE_S = 300


class SignatureVerificationError(Exception):
    """A request's signature does not prove it came from payrail, unmodified and recently.

    `reason` is a stable code: `missing_header`, `malformed_header`,
    `timestamp_outside_tolerance` or `no_matching_signature`.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the lowercase hex HMAC-SHA256 of `<timestamp>.<body>` keyed with `secret`."""
    signed_payload = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed_payload, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes, *older: str) -> str:
    """Return the `Payrail-Signature` header value for `body` sent at `timestamp`: one
    `v1=` per secret, the current one first, then those of a rotation still overlapping,
    so a receiver that knows either secret can verify."""
    signatures = ",".join(
        f"{SIGNATURE_SCHEME}={sign(key, timestamp, body)}" for key in (secret, *older)
    )
    return f"t={timestamp},{signatures}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    """Split a header into its timestamp and its `v1` signatures.

    Raises SignatureVerificationError (`missing_header` or `malformed_header`).
    """
    if not header or not header.strip():
        raise SignatureVerificationError("missing_header")
    if len(header) > HEADER_LENGTH_MAX:
        raise SignatureVerificationError("malformed_header", "header is too long")
    entries = header.split(",")
    if len(entries) > HEADER_ENTRY_COUNT_MAX:
        raise SignatureVerificationError("malformed_header", "too many entries")
    timestamps: list[str] = []
    signatures: list[str] = []
    for entry in entries:
        key, separator, value = entry.strip().partition("=")
        if not separator or not key or not value:
            raise SignatureVerificationError(
                "malformed_header", f"entry {entry!r} is not key=value"
            )
        if key == "t":
            timestamps.append(value)
        elif key == SIGNATURE_SCHEME:
            signatures.append(value)
        # Other schemes are ignored, so a future `v2` can be added next to `v1`.
    if len(timestamps) != 1:
        raise SignatureVerificationError("malformed_header", "expected exactly one t= entry")
    if not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise SignatureVerificationError("malformed_header", "t is not a Unix time in seconds")
    if not signatures:
        raise SignatureVerificationError("malformed_header", f"no {SIGNATURE_SCHEME}= entry")
    return int(timestamps[0]), signatures


def verify(
    header: str,
    body: bytes,
    secrets: Sequence[str],
    *,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Return when `header` signs `body` with one of `secrets` at a time close to `now`.

    `now` is the receiver's current Unix time in seconds; a timestamp more than
    `tolerance_s` seconds away from it (either direction) is rejected.

    Raises SignatureVerificationError with reason `missing_header`, `malformed_header`,
    `timestamp_outside_tolerance` or `no_matching_signature`. Raises ValueError when
    `secrets` is empty or `tolerance_s` is negative (a mistake in the caller, not in the
    request).
    """
    if not secrets:
        raise ValueError("verify needs at least one secret")
    if tolerance_s < 0:
        raise ValueError("tolerance_s must not be negative")
    timestamp, signatures = _parse_header(header)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureVerificationError(
            "timestamp_outside_tolerance",
            f"t={timestamp} is {now - timestamp}s from now (tolerance {tolerance_s}s)",
        )
    matched = False
    for secret in secrets:
        expected = sign(secret, timestamp, body).encode("ascii")
        for candidate in signatures:
            # Compare every pair without stopping early: the time taken depends only on
            # how many secrets and entries there are, never on which one matched.
            matched |= hmac.compare_digest(expected, candidate.encode("utf-8"))
    if not matched:
        raise SignatureVerificationError("no_matching_signature")
