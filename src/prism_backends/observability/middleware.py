"""Per request: its id (``X-Request-ID``, taken or made, and returned), the
log context, and the request metrics. Pure ASGI, outermost, so the figures
include every layer and every answer (errors, rate limits, the console)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prism_backends.observability import context
from prism_backends.observability.instruments import instruments
from prism_backends.observability.latency import LatencyWindow

HEADER = b"x-request-id"
UNMATCHED = "unmatched"  # no route: a label that cannot grow with what clients send


class ObserveRequests:
    def __init__(self, app: ASGIApp, latency: LatencyWindow) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = _header(scope, HEADER)
        rid = context.accepted_request_id(offered)
        context.enter_request(scope, rid)
        status = 500
        encoded = rid.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method = _method_name(scope)
        metrics = instruments()
        metrics.api_requests.labels(method, str(status)).inc()
        metrics.http_requests.labels(str(status)).inc()
        metrics.http_duration.observe(seconds)
        self.latency.observe(method, seconds * 1e6)


def _method_name(scope: Scope) -> str:
    """The API method, as go-kit names it: the route's name (``view_cvm``)."""
    route: Any = scope.get("route")
    name = getattr(route, "name", None)
    return name if isinstance(name, str) and name else UNMATCHED


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            try:
                return str(value.decode("ascii"))
            except UnicodeDecodeError:
                return None
    return None
