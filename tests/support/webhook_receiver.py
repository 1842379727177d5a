"""A real HTTP webhook receiver on 127.0.0.1 for tests that run the platform as processes.

It serves in its own threads (the tests that use it are synchronous), answers each path
the way the test configured it (fail the first N requests, always fail, hold the request
until released), and verifies every signature with the helper payrail ships to merchants.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.notifier.signature import SignatureVerificationError, verify

HOLD_TIMEOUT_S = 30.0


@dataclass
class Route:
    """How one path answers. Requests are counted per path, in arrival order."""

    secrets: list[str] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to this many requests, then 200
    always_fail: bool = False
    hold: threading.Event | None = None  # answer only once this is set (or after a timeout)


@dataclass(frozen=True)
class Received:
    path: str
    event_id: str
    body: bytes
    status: int
    verified: bool
    verification_error: str | None
    in_flight_elsewhere: dict[str, int]  # requests other paths were holding on arrival


class WebhookReceiver:
    """Use as a context manager; `url(path)` is where an endpoint should point."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._received: list[Received] = []
        self._arrivals: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._in_flight_max: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            for route in self._routes.values():
                if route.hold is not None:
                    route.hold.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def route(self, path: str, route: Route) -> None:
        with self._lock:
            self._routes[path] = route

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [request for request in self._received if request.path == path]

    def arrived(self, path: str) -> int:
        """Requests that reached `path`, answered or still held."""
        with self._lock:
            return self._arrivals.get(path, 0)

    def in_flight_max(self, path: str) -> int:
        with self._lock:
            return self._in_flight_max.get(path, 0)

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            route = self._routes.get(path, Route(always_fail=True))
            arrival = self._arrivals.get(path, 0) + 1
            self._arrivals[path] = arrival
            elsewhere = {p: n for p, n in self._in_flight.items() if p != path and n > 0}
            self._in_flight[path] = self._in_flight.get(path, 0) + 1
            self._in_flight_max[path] = max(self._in_flight_max.get(path, 0), self._in_flight[path])
        try:
            verified, error = True, None
            try:
                verify(
                    headers.get("payrail-signature", ""),
                    body,
                    route.secrets or ["no secret configured"],
                    now=int(time.time()),
                )
            except SignatureVerificationError as failure:
                verified, error = False, failure.reason
            if route.hold is not None:
                route.hold.wait(HOLD_TIMEOUT_S)
            failing = route.always_fail or arrival <= route.fail_first
            status = 500 if failing else 200
            with self._lock:
                self._received.append(
                    Received(
                        path=path,
                        event_id=headers.get("payrail-event-id", ""),
                        body=body,
                        status=status,
                        verified=verified,
                        verification_error=error,
                        in_flight_elsewhere=elsewhere,
                    )
                )
            return status
        finally:
            with self._lock:
                self._in_flight[path] -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._answer(self.path, headers, body)
                answer = b'{"received": true}' if status == 200 else b'{"error": "try later"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: the test asserts on what arrived

        return Handler
