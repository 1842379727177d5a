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

import urllib.request
from collections.abc import Awaitable, Callable, Collection, Iterable

import httpcore
import httpx

from services.notifier.domain import PrivateTarget
from services.notifier.handlers import addresses_to_connect, check_resolved_target, resolve_host
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
        try:
            addresses = await addresses_to_connect(host, port, self._allowed_hosts, self._resolve)
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {error}") from error
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


def webhook_client(
    settings: NotifierSettings, *, resolve: Resolve = resolve_host
) -> httpx.AsyncClient:
    """The client every webhook attempt is sent with.

    Without a proxy it connects through PublicAddressBackend. With HTTP(S)_PROXY set the
    proxy makes the connection, so it is the proxy that must refuse internal networks; the
    client still resolves and checks each request's host before sending it.
    """
    allowed_hosts = frozenset(host.lower().rstrip(".") for host in settings.webhook_allowed_hosts)
    limits = httpx.Limits(
        max_connections=settings.webhook_concurrency_max,
        max_keepalive_connections=settings.webhook_concurrency_max,
    )

    async def refuse_private_target(request: httpx.Request) -> None:
        await check_resolved_target(str(request.url), allowed_hosts, resolve)

    proxied = proxy_configured()
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.webhook_timeout_ms / 1000),
        limits=limits,
        transport=None
        if proxied
        else PublicAddressTransport(
            limits=limits, backend=PublicAddressBackend(allowed_hosts, resolve=resolve)
        ),
        event_hooks={"request": [refuse_private_target] if proxied else []},
        # A redirect is an answer, not a delivery: following it could send signed
        # payloads somewhere the merchant never registered.
        follow_redirects=False,
        # Honour HTTP(S)_PROXY (used only when no transport is given, see above).
        trust_env=True,
    )
