"""No SSRF through webhook URLs: which hosts and resolved addresses a webhook may target."""

from __future__ import annotations

import ipaddress

import pytest

from services.notifier import handlers
from services.notifier.domain import PrivateTarget, check_public_host, is_public_address


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared (CGNAT)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", True),
    ],
)
def test_only_global_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "api.localhost", "[::1]"])
def test_local_hosts_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(PrivateTarget):
        check_public_host(host, ())
    check_public_host(host.lower().rstrip("."), {host.lower().rstrip(".")})


def test_names_pass_until_they_are_resolved() -> None:
    check_public_host("hooks.shop.example", ())


@pytest.mark.parametrize(("address", "refused"), [("10.0.0.5", True), ("93.184.215.14", False)])
async def test_a_name_that_resolves_to_a_private_address_is_not_sent_to(
    address: str, refused: bool
) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.shop.example", 443)
        return ["93.184.215.14", address]

    if refused:
        with pytest.raises(PrivateTarget):
            await handlers.check_resolved_target("https://hooks.shop.example/h", (), resolve)
    else:
        await handlers.check_resolved_target("https://hooks.shop.example/h", (), resolve)


async def test_an_allowed_host_is_not_resolved() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise AssertionError("resolved an allowed host")

    await handlers.check_resolved_target(
        "http://hooks.shop.example/h", {"hooks.shop.example"}, resolve
    )
