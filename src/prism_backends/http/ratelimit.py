"""Rate limits of the HTTP API: per client address, on every request before
anything else runs, and per token subject, once the token has verified.

Past a limit the answer is 429 with ``Retry-After``. The buckets live in the
process: behind a load balancer each ``api`` process limits on its own.
Loopback clients are not limited unless ``rate_limit_loopback`` says so (the
embedded default's user, and local tools; a reverse proxy on the same host
passes the client's address in ``X-Forwarded-For``, which uvicorn applies).
"""

from __future__ import annotations

import functools
import ipaddress
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from prism_backends.buckets import KeyedLimiter
from prism_backends.config import Settings
from prism_backends.errors import TooManyRequests
from prism_backends.http.errors import error_response

BURST_SECONDS = 10  # a limiter's burst: this many seconds of its rate


def _limiter(rate: float) -> KeyedLimiter | None:
    return KeyedLimiter(rate, max(1.0, rate * BURST_SECONDS)) if rate > 0 else None


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    # Asked twice a request (the source's limit, the principal's); parsing
    # the address each time cost about 5 % of a view's CPU.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class RequestLimits:
    per_source: KeyedLimiter | None
    per_principal: KeyedLimiter | None
    limit_loopback: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            per_source=_limiter(settings.rate_limit_per_source),
            per_principal=_limiter(settings.rate_limit_per_principal),
            limit_loopback=settings.rate_limit_loopback,
        )

    def exempt(self, host: str | None) -> bool:
        return host is None or (not self.limit_loopback and _is_loopback(host))

    def source_retry_after(self, host: str | None) -> int | None:
        if self.per_source is None or self.exempt(host):
            return None
        return self.per_source.retry_after(str(host), time.monotonic())

    def check_principal(self, host: str | None, subject: str) -> None:
        """Raise 429 when this token subject is past its rate."""
        if self.per_principal is None or self.exempt(host):
            return
        wait = self.per_principal.retry_after(subject, time.monotonic())
        if wait is not None:
            raise TooManyRequests(
                f"too many requests for this token's subject (at most "
                f"{self.per_principal.rate:g} a second); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )


class SourceLimit:
    """ASGI middleware: 429 for a client address past its rate."""

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self._app = app
        self._limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            wait = self._limits.source_retry_after(client[0] if client else None)
            if wait is not None:
                response = error_response(
                    429,
                    TooManyRequests.code,
                    f"too many requests from this address; retry in {wait} s",
                    {"Retry-After": str(wait)},
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
