"""The WeChat-Pay-style protocol (APIv3 shapes), shared by the PSP simulator and the adapter.

Pure functions and constants only: no I/O, no clock, no logging, no randomness (callers
pass timestamps and nonces in).

Where the real channel signs with RSA certificates, this one signs with HMAC-SHA256 under
the merchant's 32-byte APIv3 key, which both sides share:

- a merchant request carries `Authorization: WECHATPAY2-HMAC-SHA256 mchid="…",
  nonce_str="…",timestamp="…",signature="…"`, the signature covering
  `"{METHOD}\\n{path_with_query}\\n{timestamp}\\n{nonce}\\n{body}\\n"`;
- every answer and every notification carries `Wechatpay-Timestamp`, `Wechatpay-Nonce`,
  `Wechatpay-Signature` and `Wechatpay-Serial`, the signature covering
  `"{timestamp}\\n{nonce}\\n{body}\\n"`.

A signature is the standard base64 of the HMAC-SHA256 digest. The resource of a
notification is encrypted with AES-256-GCM under the same key (`AEAD_AES_256_GCM`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

AUTHORIZATION_SCHEMA: Final = "WECHATPAY2-HMAC-SHA256"
# The APIv3 key is exactly this many bytes: it is the AES-256 key of notification resources.
API_V3_KEY_BYTES: Final = 32

HEADER_TIMESTAMP: Final = "Wechatpay-Timestamp"
HEADER_NONCE: Final = "Wechatpay-Nonce"
HEADER_SIGNATURE: Final = "Wechatpay-Signature"
HEADER_SERIAL: Final = "Wechatpay-Serial"
# Names the key that signed an answer or notification, so keys can rotate; with one shared
# HMAC key per merchant there is exactly one serial.
SIGNATURE_SERIAL: Final = "PAYRAIL-HMAC-SHA256-APIV3"

# A signed request, answer or notification whose timestamp is further than this from the
# receiver's clock is refused: clocks drift, but not by minutes.
TIMESTAMP_SKEW_S_MAX: Final = 300
# Request and answer bodies are a few hundred bytes; both sides refuse more than this.
BODY_BYTES_MAX: Final = 64 * 1024
AUTHORIZATION_LENGTH_MAX: Final = 1024
NONCE_LENGTH_MAX: Final = 64
SIGNATURE_LENGTH_MAX: Final = 128
# Up to 18 digits keeps every amount inside a signed 64-bit integer.
AMOUNT_MINOR_MAX: Final = 10**18 - 1
# WeChat Pay caps a trade description at 127 characters and a refund reason at 80.
DESCRIPTION_LENGTH_MAX: Final = 127
REFUND_REASON_LENGTH_MAX: Final = 80
NOTIFY_URL_LENGTH_MAX: Final = 2048
# The AES-GCM nonce of a notification resource is a 12-character string, as in APIv3.
RESOURCE_NONCE_LENGTH: Final = 12

NATIVE_PAY_PATH: Final = "/wechatpay/v3/pay/transactions/native"
TRADE_BY_OUT_TRADE_NO_PATH_PREFIX: Final = "/wechatpay/v3/pay/transactions/out-trade-no/"
CLOSE_PATH_SUFFIX: Final = "/close"
REFUNDS_PATH: Final = "/wechatpay/v3/refund/domestic/refunds"
# The payer's side, outside the merchant API: `GET` shows the trade, `POST` pays it.
PAYER_PAY_PATH_PREFIX: Final = "/wx/pay/"
CODE_URL_PREFIX: Final = "weixin://wxpay/bizpayurl?pr="

# Error codes of the JSON API (`{"code": …, "message": …}`).
CODE_SIGN_ERROR: Final = "SIGN_ERROR"
CODE_PARAM_ERROR: Final = "PARAM_ERROR"
CODE_INVALID_REQUEST: Final = "INVALID_REQUEST"
CODE_ORDER_NOT_EXIST: Final = "ORDER_NOT_EXIST"
CODE_ORDERPAID: Final = "ORDERPAID"
CODE_TRADE_ERROR: Final = "TRADE_ERROR"
CODE_TRADE_NOT_PAID: Final = "TRADE_NOT_PAID"
CODE_NOT_ENOUGH: Final = "NOT_ENOUGH"
CODE_RESOURCE_NOT_EXISTS: Final = "RESOURCE_NOT_EXISTS"
CODE_SYSTEM_ERROR: Final = "SYSTEM_ERROR"
# The codes of a notification receiver's JSON answer.
CODE_SUCCESS: Final = "SUCCESS"
CODE_FAIL: Final = "FAIL"

# Trade states, as reported by queries and transaction notifications.
TRADE_STATE_NOTPAY: Final = "NOTPAY"
TRADE_STATE_USERPAYING: Final = "USERPAYING"
TRADE_STATE_SUCCESS: Final = "SUCCESS"
TRADE_STATE_CLOSED: Final = "CLOSED"
# Paid, then (partly) refunded: still a paid trade.
TRADE_STATE_REFUND: Final = "REFUND"
TRADE_STATES: Final = frozenset(
    {
        TRADE_STATE_NOTPAY,
        TRADE_STATE_USERPAYING,
        TRADE_STATE_SUCCESS,
        TRADE_STATE_CLOSED,
        TRADE_STATE_REFUND,
    }
)
PAID_TRADE_STATES: Final = frozenset({TRADE_STATE_SUCCESS, TRADE_STATE_REFUND})

# Refund statuses, as reported by refund queries and refund notifications.
REFUND_STATUS_PROCESSING: Final = "PROCESSING"
REFUND_STATUS_SUCCESS: Final = "SUCCESS"
REFUND_STATUS_ABNORMAL: Final = "ABNORMAL"
REFUND_STATUS_CLOSED: Final = "CLOSED"
REFUND_STATUSES: Final = frozenset(
    {REFUND_STATUS_PROCESSING, REFUND_STATUS_SUCCESS, REFUND_STATUS_ABNORMAL, REFUND_STATUS_CLOSED}
)

# Notification envelopes.
EVENT_TRANSACTION_SUCCESS: Final = "TRANSACTION.SUCCESS"
# An earlier state of a trade; only an out-of-order delivery sends it.
EVENT_TRANSACTION_USERPAYING: Final = "TRANSACTION.USERPAYING"
EVENT_REFUND_SUCCESS: Final = "REFUND.SUCCESS"
EVENT_REFUND_ABNORMAL: Final = "REFUND.ABNORMAL"
EVENT_REFUND_CLOSED: Final = "REFUND.CLOSED"
RESOURCE_TYPE_ENCRYPTED: Final = "encrypt-resource"
RESOURCE_ALGORITHM: Final = "AEAD_AES_256_GCM"
# `original_type` of a resource; it is also the resource's associated data.
ORIGINAL_TYPE_TRANSACTION: Final = "transaction"
ORIGINAL_TYPE_REFUND: Final = "refund"

# Out-trade and out-refund numbers appear in URL paths, so they are restricted to
# characters that need no escaping and cannot start a dot segment.
OUT_NUMBER_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
CURRENCY_PATTERN: Final = re.compile(r"[A-Z]{3}")
UNIX_SECONDS_PATTERN: Final = re.compile(r"[0-9]{1,12}")

# Times on the wire are RFC 3339 in China Standard Time, like the real channel's.
CHINA_STANDARD_TIME: Final = timezone(timedelta(hours=8), "CST")

_AUTHORIZATION_FIELDS: Final = ("mchid", "nonce_str", "timestamp", "signature")
_AUTHORIZATION_PARAMETER_PATTERN: Final = re.compile(r'([a-z_]{1,16})="([^"]{0,256})"')


@dataclass(frozen=True)
class Authorization:
    """The parsed parameters of a request's Authorization header (not yet verified)."""

    mch_id: str
    nonce: str
    timestamp: str
    signature: str


class UndecryptableResource(ValueError):
    """A notification resource that does not decrypt and authenticate under the key."""


def request_message(
    method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    """Return the bytes a merchant request's signature covers; `body` is empty for GET."""
    head = f"{method.upper()}\n{path_with_query}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def answer_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """Return the bytes an answer's or a notification's signature covers."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign(message: bytes, api_v3_key: str) -> str:
    """Return the base64 HMAC-SHA256 of `message` under the APIv3 key."""
    digest = hmac.new(api_v3_key.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(message: bytes, signature: str, api_v3_key: str) -> bool:
    """Return True when `signature` is the signature of `message` under the APIv3 key.

    The comparison takes constant time so a forger learns nothing from response timing;
    an empty signature is simply not valid.
    """
    if signature == "":
        return False
    expected = sign(message, api_v3_key)
    # Compare bytes: compare_digest refuses str arguments that are not pure ASCII.
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8"))


def authorization(mch_id: str, nonce: str, timestamp: str, signature: str) -> str:
    """Return the value of a merchant request's Authorization header."""
    return (
        f'{AUTHORIZATION_SCHEMA} mchid="{mch_id}",nonce_str="{nonce}",'
        f'timestamp="{timestamp}",signature="{signature}"'
    )


def parse_authorization(value: str) -> Authorization | None:
    """Parse an Authorization header; None unless it is exactly the four expected
    parameters, each once, in `key="value"` form after the schema."""
    if len(value) > AUTHORIZATION_LENGTH_MAX:
        return None
    schema, separator, parameters = value.partition(" ")
    if schema != AUTHORIZATION_SCHEMA or separator == "":
        return None
    found: dict[str, str] = {}
    for item in parameters.split(","):
        match = _AUTHORIZATION_PARAMETER_PATTERN.fullmatch(item)
        if match is None or match.group(1) in found:
            return None
        found[match.group(1)] = match.group(2)
    if sorted(found) != sorted(_AUTHORIZATION_FIELDS):
        return None
    return Authorization(
        mch_id=found["mchid"],
        nonce=found["nonce_str"],
        timestamp=found["timestamp"],
        signature=found["signature"],
    )


def encrypt_resource(plaintext: bytes, *, nonce: str, associated_data: str, api_v3_key: str) -> str:
    """Return the base64 AES-256-GCM ciphertext (tag appended) of a notification resource."""
    sealed = AESGCM(_aes_key(api_v3_key)).encrypt(
        nonce.encode("utf-8"), plaintext, associated_data.encode("utf-8")
    )
    return base64.b64encode(sealed).decode("ascii")


def decrypt_resource(
    ciphertext: str, *, nonce: str, associated_data: str, api_v3_key: str
) -> bytes:
    """Return the plaintext of a notification resource.

    Raises UndecryptableResource when the ciphertext is not strict base64, the nonce has
    an unusable length, or the tag does not authenticate ciphertext and associated data.
    """
    try:
        sealed = base64.b64decode(ciphertext.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as error:
        raise UndecryptableResource("ciphertext is not base64") from error
    try:
        return AESGCM(_aes_key(api_v3_key)).decrypt(
            nonce.encode("utf-8"), sealed, associated_data.encode("utf-8")
        )
    except InvalidTag as error:
        raise UndecryptableResource("the tag does not authenticate the resource") from error
    except ValueError as error:
        raise UndecryptableResource(str(error)) from error


def dumps(value: object) -> bytes:
    """Return compact UTF-8 JSON: the exact bytes that are sent and signed."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads_object(data: bytes) -> dict[str, object]:
    """Decode a JSON object strictly; raise ValueError otherwise.

    Duplicate keys and the non-standard constants NaN and Infinity are refused, so two
    parsers can never read different values out of one signed body.
    """
    decoded = json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")
    return decoded


def format_time(moment: datetime) -> str:
    """Return an aware time as RFC 3339 in China Standard Time, to the second."""
    if moment.tzinfo is None:
        raise ValueError("a naive time has no place on the wire")
    return moment.astimezone(CHINA_STANDARD_TIME).isoformat(timespec="seconds")


def close_path(out_trade_no: str) -> str:
    return f"{TRADE_BY_OUT_TRADE_NO_PATH_PREFIX}{out_trade_no}{CLOSE_PATH_SUFFIX}"


def trade_path(out_trade_no: str) -> str:
    return f"{TRADE_BY_OUT_TRADE_NO_PATH_PREFIX}{out_trade_no}"


def refund_path(out_refund_no: str) -> str:
    return f"{REFUNDS_PATH}/{out_refund_no}"


def _aes_key(api_v3_key: str) -> bytes:
    key = api_v3_key.encode("utf-8")
    if len(key) != API_V3_KEY_BYTES:
        raise ValueError(f"the APIv3 key must be {API_V3_KEY_BYTES} bytes")
    return key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
