"""Events about merchants' webhook endpoints, recorded by the notifier.

An endpoint that fails every delivery attempt for the configured period is disabled
(`WebhookEndpointDisabled`): the merchant sees `webhook_endpoint.disabled` in its events
and on its other endpoints, and operations get it on the ops webhook. Deliveries due to
the endpoint wait, and resume when the merchant enables it again.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from schemas.envelope import Contract, Event
from schemas.topics import Topic


class WebhookEndpointDisabledPayload(Contract):
    endpoint_id: str = Field(min_length=1, max_length=128)
    url: str = Field(min_length=1, max_length=2_048)
    failing_since: AwareDatetime
    disabled_at: AwareDatetime
    reason: str = Field(min_length=1, max_length=500)


class WebhookEndpointDisabled(Event):
    """The notifier stopped sending to an endpoint that kept failing."""

    topic: ClassVar[Topic] = Topic.NOTIFIER_EVENTS
    event_type: Literal["WebhookEndpointDisabled"] = "WebhookEndpointDisabled"
    schema_version: Literal[1] = 1
    payload: WebhookEndpointDisabledPayload
