"""Property-based fuzzing of the public API from its OpenAPI document: whatever a client
sends, the gateway answers without a server error."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from services.common.launcher import PlatformInfo

EXAMPLES_PER_OPERATION = 25


def test_no_request_makes_the_gateway_fail(info: PlatformInfo) -> None:
    schema = schemathesis.openapi.from_url(f"{info.api_base_url}/openapi.json")
    # An operation the document describes badly is an error result, and fails the test here.
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10

    for operation in operations:
        token = info.admin_key if operation.path.startswith("/v1/admin") else info.demo_api_key
        fuzz(operation, token or "")


def fuzz(operation: schemathesis.APIOperation[Any, Any, Any, Any], token: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error], timeout=30
        )

    no_server_error()
