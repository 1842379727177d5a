"""The HTTP client webhooks leave through: it connects only to the public address it
checked, so a webhook URL cannot reach the platform's own network (SSRF).

Checking a host name before sending is not enough on its own: the client resolves the
name again to connect, and a name that answers with a public address to the check and a
private one to the connection (DNS rebinding, a zero TTL) would get through. Here the name
is resolved once, inside the connection: every address it resolves to must be public, and
the socket is opened to one of those very addresses. TLS still verifies the certificate
against the URL's host name, and the pool keeps connections per host name.
"""

from __future__ import annotations

import ipaddress
import urllib.request
from collections.abc import Awaitable, Callable, Collection, Iterable

import httpcore
import httpx

from services.notifier.domain import PrivateTarget, check_public_host, is_public_address
from services.notifier.handlers import resolve_host
from services.notifier.settings import NotifierSettings

Resolve = Callable[[str, int], Awaitable[list[str]]]
# The socket options httpcore's backends take.
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class PublicAddressBackend(httpcore.AsyncNetworkBackend):
    """A network backend that opens TCP connections to public addresses only.

    Hosts on `allowed_hosts` (exact, lower case) are connected to as they are. Any other
    host is resolved once with `resolve`; when any of its addresses is not public the
    connection is refused with PrivateTarget, otherwise the addresses are tried in order
    through `inner`. Raises PrivateTarget, or httpcore.ConnectError when the name does not
    resolve or no address accepts the connection.
    """

    def __init__(
        self,
        allowed_hosts: Collection[str],
        *,
        resolve: Resolve = resolve_host,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowed_hosts = frozenset(allowed_hosts)
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host.lower().rstrip(".") in self._allowed_hosts:
            addresses = [host]
        else:
            addresses = await self._public_addresses(host, port)
        last_error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        if last_error is None:
            raise httpcore.ConnectError(f"{host!r} resolved to no address")
        raise last_error

    async def _public_addresses(self, host: str, port: int) -> list[str]:
        check_public_host(host, self._allowed_hosts)
        try:
            resolved = await self._resolve(host, port)
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {error}") from error
        for address in resolved:
            if not is_public_address(ipaddress.ip_address(address)):
                raise PrivateTarget(f"webhook host {host!r} resolves to a non-public address")
        # getaddrinfo repeats an address once per protocol it offers; try each once.
        return list(dict.fromkeys(resolved))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise PrivateTarget("webhooks are never sent to a local socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PublicAddressTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with a connection pool that connects through
    PublicAddressBackend. httpx takes no network backend of its own (encode/httpx#3749
    proposes one), so the pool it builds is replaced by one with the same options."""

    def __init__(self, *, limits: httpx.Limits, backend: httpcore.AsyncNetworkBackend) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def proxy_configured() -> bool:
    """Whether HTTP(S)_PROXY routes outbound HTTP through an egress proxy."""
    proxies = urllib.request.getproxies()
    return any(scheme in proxies for scheme in ("http", "https", "all"))


def build_webhook_client(
    *,
    timeout_ms: int,
    connection_count_max: int,
    allowed_hosts: Collection[str],
    resolve: Resolve = resolve_host,
) -> httpx.AsyncClient:
    """The client every webhook attempt is sent with.

    Without a proxy it connects through PublicAddressBackend. With HTTP(S)_PROXY set the
    proxy makes the connection, so it is the proxy that must refuse internal networks; the
    check each attempt makes before sending still refuses names that resolve to one.
    """
    limits = httpx.Limits(
        max_connections=connection_count_max,
        max_keepalive_connections=connection_count_max,
    )
    transport = (
        None
        if proxy_configured()
        else PublicAddressTransport(
            limits=limits, backend=PublicAddressBackend(allowed_hosts, resolve=resolve)
        )
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_ms / 1000),
        limits=limits,
        transport=transport,
        # A redirect is an answer, not a delivery: following it could send signed
        # payloads somewhere the merchant never registered.
        follow_redirects=False,
        # Honour HTTP(S)_PROXY (used only when no transport is given, see above).
        trust_env=True,
    )


def webhook_client(settings: NotifierSettings) -> httpx.AsyncClient:
    """The notifier's webhook client, as its settings describe it."""
    return build_webhook_client(
        timeout_ms=settings.webhook_timeout_ms,
        connection_count_max=settings.webhook_concurrency_max,
        allowed_hosts={host.lower().rstrip(".") for host in settings.webhook_allowed_hosts},
    )
