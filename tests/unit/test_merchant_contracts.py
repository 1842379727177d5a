"""Merchant profile contracts: validation and the v1 -> v2 upcast of MerchantOnboarded."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import Topic, decode
from schemas.common import Channel
from schemas.merchants import MerchantOnboarded, MerchantProfile, MerchantStatus, SettlementTerms


def v1_onboarded() -> dict[str, object]:
    """A MerchantOnboarded as the first release wrote it."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "MerchantOnboarded",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": "gateway",
        "aggregate_id": "mch_old",
        "aggregate_version": 1,
        "correlation_id": "mch_old",
        "causation_id": None,
        "merchant_id": "mch_old",
        "payload": {
            "name": "Old Shop",
            "channels": ["alipay"],
            "fee_plans": {"alipay": {"basis_points": 60, "fixed_minor": 0}},
            "single_payment_limit_minor": 5000,
        },
    }


def test_a_v1_onboarding_is_read_as_v2_with_the_defaults_v1_merchants_had() -> None:
    event = decode(Topic.MERCHANTS_EVENTS, json.dumps(v1_onboarded()).encode())
    assert isinstance(event, MerchantOnboarded)
    assert event.schema_version == 2
    assert event.payload.status is MerchantStatus.ACTIVE
    assert event.payload.settlement_terms == SettlementTerms(
        delay_days=1, cutoff_time="00:00", time_zone="UTC"
    )
    assert event.payload.payment_expiry_minutes == 30
    assert event.payload.single_payment_limit_minor == 5000


def profile(**changes: object) -> dict[str, object]:
    return {
        "name": "Shop",
        "channels": ["alipay"],
        "fee_plans": {"alipay": {"basis_points": 60, "fixed_minor": 0}},
        **changes,
    }


def test_a_valid_profile_with_terms_in_a_time_zone() -> None:
    parsed = MerchantProfile.model_validate(
        profile(
            settlement_terms={"delay_days": 7, "cutoff_time": "23:59", "time_zone": "Asia/Shanghai"}
        )
    )
    assert parsed.channels == (Channel.ALIPAY,)
    assert parsed.settlement_terms.delay_days == 7


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"channels": ["alipay", "card"]}, "no fee plan for channels ['card']"),
        ({"settlement_terms": {"time_zone": "Mars/Olympus"}}, "unknown time zone"),
        ({"settlement_terms": {"cutoff_time": "24:00"}}, "cutoff_time"),
        ({"settlement_terms": {"delay_days": 31}}, "delay_days"),
        ({"payment_expiry_minutes": 0}, "payment_expiry_minutes"),
        ({"status": "closed"}, "status"),
    ],
)
def test_invalid_profiles_are_refused(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        MerchantProfile.model_validate(profile(**changes))
