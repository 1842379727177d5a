"""The client webhooks are sent with, over real sockets to a real receiver on 127.0.0.1:
a name that resolves to a loopback address is refused at the connection itself (whatever
was checked before), and an allow-listed host is reached without a lookup.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.notifier.domain import PrivateTarget
from services.notifier.egress import webhook_client
from services.notifier.settings import NotifierSettings
from tests.support.webhook_receiver import Route, WebhookReceiver

pytestmark = pytest.mark.integration

REBINDING_HOST = "hooks.rebinding.test"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as serving:
        yield serving


def client_settings(allowed_hosts: list[str]) -> NotifierSettings:
    """Settings for the webhook client alone: nothing here touches the database."""
    return NotifierSettings(
        database_url="postgresql://unused@127.0.0.1/unused",
        webhook_timeout_ms=5_000,
        webhook_concurrency_max=2,
        webhook_allowed_hosts=allowed_hosts,
    )


def port_of(receiver: WebhookReceiver) -> int:
    port = httpx.URL(receiver.url("/")).port
    assert port is not None
    return port


async def test_a_name_resolving_to_loopback_is_refused_when_connecting(
    receiver: WebhookReceiver,
) -> None:
    path = f"/{uuid.uuid4().hex[:12]}"
    receiver.route(path, Route())
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]  # where the receiver listens: reachable, but not public

    async with webhook_client(client_settings([]), resolve=resolve) as client:
        with pytest.raises(PrivateTarget):
            await client.post(f"http://{REBINDING_HOST}:{port_of(receiver)}{path}", content=b"{}")
    assert lookups == [REBINDING_HOST]
    assert receiver.arrived(path) == 0


async def test_an_allowed_host_is_reached_without_a_lookup(
    receiver: WebhookReceiver,
) -> None:
    path = f"/{uuid.uuid4().hex[:12]}"
    receiver.route(path, Route())

    async def resolve(host: str, port: int) -> list[str]:
        raise AssertionError(f"resolved the allowed host {host}")

    async with webhook_client(client_settings(["127.0.0.1"]), resolve=resolve) as client:
        answers = [
            (await client.post(receiver.url(path), content=b"{}")).status_code for _ in range(3)
        ]
    assert answers == [200, 200, 200]
    assert receiver.arrived(path) == 3


async def test_behind_an_egress_proxy_the_host_is_still_checked_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The proxy makes the connection, so the client checks the host before each request;
    # nothing listens at the proxy's address, and nothing is sent there.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["10.0.0.5"]

    async with webhook_client(client_settings([]), resolve=resolve) as client:
        with pytest.raises(PrivateTarget):
            await client.post(f"http://{REBINDING_HOST}/hook", content=b"{}")
    assert lookups == [REBINDING_HOST]
