"""The webhook client connects only to the public address it checked: resolved once, every
address checked, the socket opened to a checked address (no DNS rebinding between a check
and the connection)."""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import pytest

from services.notifier.domain import PrivateTarget
from services.notifier.egress import PublicAddressBackend, SocketOption

HOST = "hooks.shop.example"
PUBLIC = "93.184.215.14"
PUBLIC_OTHER = "2606:4700::1111"


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Stands in for the socket layer: records where it was asked to connect and refuses
    the addresses listed in `refusing`."""

    def __init__(self, refusing: Iterable[str] = ()) -> None:
        self.connected_to: list[tuple[str, int]] = []
        self._refusing = set(refusing)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected_to.append((host, port))
        if host in self._refusing:
            raise httpcore.ConnectError(f"connection to {host} refused")
        return httpcore.AsyncMockStream([])

    async def sleep(self, seconds: float) -> None:
        return None


class Resolver:
    """Answers each lookup with the next of `answers` (a rebinding name changes its
    answer between lookups) and counts the lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        answer = self._answers[min(len(self.lookups), len(self._answers)) - 1]
        if not answer:
            raise OSError("Name or service not known")
        return answer


async def test_the_socket_goes_to_the_address_that_was_checked_however_the_name_rebinds() -> None:
    # Public to the first lookup, loopback to any later one: only one lookup is made.
    resolver = Resolver([PUBLIC], ["127.0.0.1"])
    inner = RecordingBackend()
    backend = PublicAddressBackend((), resolve=resolver, inner=inner)

    await backend.connect_tcp(HOST, 443)

    assert resolver.lookups == [(HOST, 443)]
    assert inner.connected_to == [(PUBLIC, 443)]


@pytest.mark.parametrize("private", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::1"])
async def test_a_name_with_any_private_address_is_refused_before_connecting(private: str) -> None:
    inner = RecordingBackend()
    backend = PublicAddressBackend((), resolve=Resolver([PUBLIC, private]), inner=inner)

    with pytest.raises(PrivateTarget):
        await backend.connect_tcp(HOST, 443)
    assert inner.connected_to == []


async def test_a_private_literal_address_is_refused_without_a_lookup() -> None:
    resolver = Resolver([PUBLIC])
    inner = RecordingBackend()
    backend = PublicAddressBackend((), resolve=resolver, inner=inner)

    with pytest.raises(PrivateTarget):
        await backend.connect_tcp("192.168.1.1", 80)
    with pytest.raises(PrivateTarget):
        await backend.connect_tcp("localhost", 80)
    assert (resolver.lookups, inner.connected_to) == ([], [])


async def test_an_allowed_host_is_connected_to_as_it_is() -> None:
    resolver = Resolver(["10.0.0.5"])
    inner = RecordingBackend()
    backend = PublicAddressBackend({"127.0.0.1"}, resolve=resolver, inner=inner)

    await backend.connect_tcp("127.0.0.1", 8080)

    assert (resolver.lookups, inner.connected_to) == ([], [("127.0.0.1", 8080)])


async def test_the_next_checked_address_is_tried_when_one_refuses() -> None:
    inner = RecordingBackend(refusing={PUBLIC})
    backend = PublicAddressBackend(
        (), resolve=Resolver([PUBLIC, PUBLIC, PUBLIC_OTHER]), inner=inner
    )

    await backend.connect_tcp(HOST, 443)

    assert inner.connected_to == [(PUBLIC, 443), (PUBLIC_OTHER, 443)]  # each address once


async def test_no_address_accepting_is_a_connect_error() -> None:
    inner = RecordingBackend(refusing={PUBLIC})
    backend = PublicAddressBackend((), resolve=Resolver([PUBLIC]), inner=inner)

    with pytest.raises(httpcore.ConnectError, match="refused"):
        await backend.connect_tcp(HOST, 443)


async def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    backend = PublicAddressBackend((), resolve=Resolver([]), inner=RecordingBackend())

    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await backend.connect_tcp(HOST, 443)


async def test_a_local_socket_is_refused() -> None:
    backend = PublicAddressBackend({"127.0.0.1"}, inner=RecordingBackend())

    with pytest.raises(PrivateTarget):
        await backend.connect_unix_socket("/var/run/docker.sock")
