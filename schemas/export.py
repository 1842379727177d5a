"""Export the contracts: a JSON Schema per message type and the AsyncAPI document of the bus.

The files live in `schemas/generated/` and are checked in, so reviewers see contract
changes in diffs; a test fails when they are stale (`payrail export-schemas` rewrites them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from schemas.catalog import MESSAGE_TYPES, _current_version, _type_name
from schemas.topics import Topic

GENERATED_DIR = Path(__file__).parent / "generated"

# Who writes each topic; documented in the AsyncAPI description of its channel.
TOPIC_PRODUCERS: dict[Topic, str] = {
    Topic.ORDERS: "upstream order systems",
    Topic.MERCHANTS_EVENTS: "gateway",
    Topic.PAYMENTS_COMMANDS: "gateway",
    Topic.PAYMENTS_EVENTS: "payment_center",
    Topic.RISK_DECISIONS: "risk",
    Topic.CHANNEL_COMMANDS: "payment_center",
    Topic.CHANNEL_RESULTS: "gateway",
    Topic.LEDGER_EVENTS: "ledger",
    Topic.NOTIFIER_EVENTS: "notifier",
    Topic.OPERATIONS_EVENTS: "every consumer (a dead letter parked)",
    Topic.DEAD_LETTERS: "every consumer (unprocessable messages, unchanged, with a reason header)",
}


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def json_schema_files() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for cls in MESSAGE_TYPES:
        name = f"{_type_name(cls)}.v{_current_version(cls)}.schema.json"
        schema = cls.model_json_schema(mode="serialization")
        schema["$id"] = f"https://payrail.dev/schemas/{name}"
        schema["x-topic"] = cls.topic.value
        files[GENERATED_DIR / "json" / name] = _dump(schema)
    return files


def asyncapi_document() -> str:
    broker = KafkaBroker("kafka:9092")
    for topic in Topic:
        classes = [cls for cls in MESSAGE_TYPES if cls.topic is topic]
        if not classes:
            continue
        message_schema: Any = classes[0] if len(classes) == 1 else Union[tuple(classes)]  # noqa: UP007
        broker.publisher(
            topic.value,
            title=topic.value,
            description=f"Written by {TOPIC_PRODUCERS[topic]}. Key: the aggregate id.",
            schema=message_schema,
        )
    specification = AsyncAPI(
        broker,
        title="payrail event bus",
        version="0.1.0",
        description="Topics, events and commands exchanged by payrail services.",
    ).to_specification()
    return _dump(json.loads(specification.to_json()))


def expected_files() -> dict[Path, str]:
    return {**json_schema_files(), GENERATED_DIR / "asyncapi.json": asyncapi_document()}


def write_exports() -> list[Path]:
    """Write every generated file; remove generated files no contract produces any more."""
    files = expected_files()
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for old in (GENERATED_DIR / "json").glob("*.json"):
        if old not in files:
            old.unlink()
    return sorted(files)


def check_exports() -> list[Path]:
    """The generated files that are missing, stale or no longer produced."""
    files = expected_files()
    stale = [
        path for path, content in files.items() if not path.exists() or path.read_text() != content
    ]
    stale += [old for old in (GENERATED_DIR / "json").glob("*.json") if old not in files]
    return sorted(stale)
