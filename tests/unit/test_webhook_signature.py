"""The webhook signature helper, as payrail uses it to sign and receivers use it to verify."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pytest

from services.notifier.signature import (
    SignatureVerificationError,
    sign,
    signature_header,
    verify,
)

NOW = 1_717_000_000
BODY = b'{"id":"evt","type":"payment.succeeded","data":{"object":{"amount":1000}}}'


def random_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(24)}"


def reason_of(error: pytest.ExceptionInfo[SignatureVerificationError]) -> str:
    return error.value.reason


def test_sign_is_hmac_sha256_over_timestamp_dot_body_in_lowercase_hex() -> None:
    secret = random_secret()
    expected = hmac.new(secret.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(secret, NOW, BODY) == expected
    assert signature_header(secret, NOW, BODY) == f"t={NOW},v1={expected}"


def test_a_signed_body_verifies() -> None:
    secret = random_secret()
    verify(signature_header(secret, NOW, BODY), BODY, [secret], now=NOW)


def test_a_tampered_body_does_not_verify() -> None:
    secret = random_secret()
    header = signature_header(secret, NOW, BODY)
    with pytest.raises(SignatureVerificationError) as error:
        verify(header, BODY.replace(b"1000", b"9000"), [secret], now=NOW)
    assert reason_of(error) == "no_matching_signature"


def test_a_tampered_timestamp_does_not_verify() -> None:
    secret = random_secret()
    signature = sign(secret, NOW, BODY)
    with pytest.raises(SignatureVerificationError) as error:
        verify(f"t={NOW + 1},v1={signature}", BODY, [secret], now=NOW)
    assert reason_of(error) == "no_matching_signature"


def test_a_wrong_secret_does_not_verify() -> None:
    header = signature_header(random_secret(), NOW, BODY)
    with pytest.raises(SignatureVerificationError) as error:
        verify(header, BODY, [random_secret()], now=NOW)
    assert reason_of(error) == "no_matching_signature"


def test_during_rotation_the_second_v1_entry_may_be_the_one_that_matches() -> None:
    old_secret, new_secret = random_secret(), random_secret()
    header = f"t={NOW},v1={sign(old_secret, NOW, BODY)},v1={sign(new_secret, NOW, BODY)}"
    verify(header, BODY, [new_secret], now=NOW)
    verify(header, BODY, [old_secret], now=NOW)


def test_a_receiver_may_accept_several_secrets() -> None:
    current, previous = random_secret(), random_secret()
    verify(signature_header(previous, NOW, BODY), BODY, [current, previous], now=NOW)


def test_unknown_schemes_are_ignored_next_to_v1() -> None:
    secret = random_secret()
    header = f"t={NOW},v0=deadbeef,v1={sign(secret, NOW, BODY)}"
    verify(header, BODY, [secret], now=NOW)


@pytest.mark.parametrize("age_s", [300, -300])
def test_a_timestamp_just_inside_the_tolerance_verifies(age_s: int) -> None:
    secret = random_secret()
    sent_at = NOW - age_s
    verify(signature_header(secret, sent_at, BODY), BODY, [secret], now=NOW, tolerance_s=300)


@pytest.mark.parametrize("age_s", [301, -301])
def test_a_timestamp_just_outside_the_tolerance_is_rejected(age_s: int) -> None:
    secret = random_secret()
    sent_at = NOW - age_s
    with pytest.raises(SignatureVerificationError) as error:
        verify(signature_header(secret, sent_at, BODY), BODY, [secret], now=NOW, tolerance_s=300)
    assert reason_of(error) == "timestamp_outside_tolerance"


def test_the_default_tolerance_is_five_minutes() -> None:
    secret = random_secret()
    verify(signature_header(secret, NOW - 300, BODY), BODY, [secret], now=NOW)
    with pytest.raises(SignatureVerificationError):
        verify(signature_header(secret, NOW - 301, BODY), BODY, [secret], now=NOW)


@pytest.mark.parametrize("header", ["", "   "])
def test_a_missing_header_is_rejected(header: str) -> None:
    with pytest.raises(SignatureVerificationError) as error:
        verify(header, BODY, [random_secret()], now=NOW)
    assert reason_of(error) == "missing_header"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "t=,v1=abc",
        f"v1={'a' * 64}",  # no timestamp
        f"t={NOW}",  # no signature
        f"t={NOW},t={NOW},v1={'a' * 64}",  # two timestamps
        f"t=12.5,v1={'a' * 64}",
        f"t=-5,v1={'a' * 64}",
        f"t=\uff11\uff12\uff13,v1={'a' * 64}",  # fullwidth (non-ASCII) digits
        f"t={NOW},v1",
        f"t={NOW}," + ",".join(f"v1={'a' * 64}" for _ in range(20)),  # too many entries
        f"t={NOW},v1={'a' * 5000}",  # too long
    ],
)
def test_a_garbled_header_is_rejected(header: str) -> None:
    with pytest.raises(SignatureVerificationError) as error:
        verify(header, BODY, [random_secret()], now=NOW)
    assert reason_of(error) == "malformed_header"


def test_verify_needs_at_least_one_secret() -> None:
    secret = random_secret()
    with pytest.raises(ValueError, match="at least one secret"):
        verify(signature_header(secret, NOW, BODY), BODY, [], now=NOW)


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    current, previous = random_secret(), random_secret()
    header = signature_header(current, NOW, BODY, previous)
    assert header.count("v1=") == 2
    verify(header, BODY, [current], now=NOW)
    verify(header, BODY, [previous], now=NOW)
    with pytest.raises(SignatureVerificationError):
        verify(header, BODY, [random_secret()], now=NOW)
