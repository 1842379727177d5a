"""The contracts: decoding, strictness, money, and the generated documents."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from schemas import Topic, UndecodableMessage, decode, encode, new_event
from schemas.catalog import UPCASTERS
from schemas.export import check_exports
from schemas.payments import PaymentCreated


def created(**overrides: object) -> dict[str, object]:
    event = new_event(
        PaymentCreated,
        {
            "order_id": "o-1",
            "amount_minor": 100,
            "currency": "CNY",
            "channel": "alipay",
            "fee_plan": {"basis_points": 60, "fixed_minor": 0},
        },
        aggregate_id="pay_1",
        aggregate_version=1,
        merchant_id="mch_1",
        producer="test",
        occurred_at=datetime.now(UTC),
        correlation_id="c",
        causation_id=None,
    )
    raw: dict[str, object] = json.loads(encode(event))
    payload = dict(raw["payload"])  # type: ignore[call-overload]
    payload.update(overrides)
    raw["payload"] = payload
    return raw


def test_round_trip() -> None:
    raw = created()
    message = decode(Topic.PAYMENTS_EVENTS, json.dumps(raw).encode())
    assert isinstance(message, PaymentCreated)
    assert json.loads(encode(message)) == raw


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"amount_minor": 10.5}, "amount_minor"),
        ({"amount_minor": "100"}, "amount_minor"),
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": 10**13}, "amount_minor"),
        ({"currency": "XXX"}, "unsupported currency"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_payloads_are_undecodable_with_a_reason(
    overrides: dict[str, object], fragment: str
) -> None:
    with pytest.raises(UndecodableMessage, match=fragment):
        decode(Topic.PAYMENTS_EVENTS, json.dumps(created(**overrides)).encode())


def test_a_message_on_the_wrong_topic_is_undecodable() -> None:
    with pytest.raises(UndecodableMessage, match="unknown message type"):
        decode(Topic.LEDGER_EVENTS, json.dumps(created()).encode())


def test_a_future_schema_version_is_undecodable() -> None:
    raw = created()
    raw["schema_version"] = 3
    with pytest.raises(UndecodableMessage, match="newer"):
        decode(Topic.PAYMENTS_EVENTS, json.dumps(raw).encode())


def test_an_old_version_is_upcast_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # A made-up v0 without a description: the upcaster adds the field.
    def v0_to_v1(raw: dict[str, object]) -> dict[str, object]:
        payload = dict(raw["payload"])  # type: ignore[call-overload]
        payload.setdefault("description", "")
        return {**raw, "payload": payload, "schema_version": 1}

    monkeypatch.setitem(UPCASTERS, ("PaymentCreated", 0), v0_to_v1)
    raw = created()
    raw["schema_version"] = 0
    del raw["payload"]["description"]  # type: ignore[attr-defined]
    message = decode(Topic.PAYMENTS_EVENTS, json.dumps(raw).encode())
    assert isinstance(message, PaymentCreated)
    assert message.payload.description == ""
    assert message.event_id == uuid.UUID(str(raw["event_id"]))


def test_events_are_frozen() -> None:
    message = decode(Topic.PAYMENTS_EVENTS, json.dumps(created()).encode())
    with pytest.raises(ValueError, match="frozen"):
        message.producer = "someone else"  # type: ignore[misc]


def test_generated_json_schema_and_asyncapi_are_current() -> None:
    stale = check_exports()
    assert stale == [], f"run `payrail export-schemas`; stale: {stale}"


def test_configuration_doc_is_current() -> None:
    from services.common.settings_doc import CONFIGURATION_DOC, configuration_doc

    assert CONFIGURATION_DOC.read_text() == configuration_doc(), "run `payrail export-schemas`"


def test_a_v1_payment_created_is_read_as_v2_without_an_expiry() -> None:
    raw = created()
    raw["schema_version"] = 1
    del raw["payload"]["expires_at"]  # type: ignore[attr-defined]
    message = decode(Topic.PAYMENTS_EVENTS, json.dumps(raw).encode())
    assert isinstance(message, PaymentCreated)
    assert message.schema_version == 2
    assert message.payload.expires_at is None


def test_the_checked_in_openapi_document_is_current_and_declares_problems() -> None:
    from services.gateway.openapi_doc import OPENAPI_DOC, openapi_document

    document = openapi_document()
    assert OPENAPI_DOC.read_text() == document, "run `payrail export-schemas`"
    paths = json.loads(document)["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            assert {"401", "422"} <= declared, f"{method.upper()} {path} declares {declared}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aggregate_id", "pay_\x00"),
        ("aggregate_id", "pay_\ud800"),
        ("causation_id", "caused-by-\x00"),
    ],
)
def test_text_postgresql_cannot_store_is_refused_in_the_envelope(field: str, value: str) -> None:
    body = created()
    body[field] = value
    with pytest.raises(UndecodableMessage, match=r"text must|unicode"):
        decode(Topic.PAYMENTS_EVENTS, json.dumps(body).encode())


@pytest.mark.parametrize("text", ["Two coffees\x00", "caf\u00e9 \ud83d", "ok \x00 caf\u00e9"])
def test_text_postgresql_cannot_store_is_refused_in_a_payload(text: str) -> None:
    body = created()
    payload = dict(body["payload"])  # type: ignore[call-overload]
    payload["description"] = text
    body["payload"] = payload
    with pytest.raises(UndecodableMessage, match=r"text must|unicode"):
        decode(Topic.PAYMENTS_EVENTS, json.dumps(body).encode())


def test_non_ascii_text_postgresql_can_store_is_accepted() -> None:
    body = created()
    payload = dict(body["payload"])  # type: ignore[call-overload]
    payload["description"] = "Deux caf\u00e9s, \u4e24\u676f\u5496\u5561"
    body["payload"] = payload
    message = decode(Topic.PAYMENTS_EVENTS, json.dumps(body).encode())
    assert isinstance(message, PaymentCreated)
    assert message.payload.description == "Deux caf\u00e9s, \u4e24\u676f\u5496\u5561"
