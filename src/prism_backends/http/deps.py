"""Request dependencies: the runtime, and the principal behind the bearer token.

Both run on the event loop (``async``, with nothing to await): FastAPI runs a
plain ``def`` dependency on the thread pool, a hop per dependency per request,
and neither does I/O (a token is verified in memory, in about 0.3 ms). Each
dependency costs FastAPI a resolution of its own on every request, so the
principal is one: it reads the runtime itself and is the OpenAPI document's
bearer scheme too."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from prism_backends.auth.principal import Principal
from prism_backends.errors import AppError, Unauthenticated
from prism_backends.http.ratelimit import RequestLimits
from prism_backends.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


class BearerPrincipal(SecurityBase):
    """The principal behind ``Authorization: Bearer <token>`` (401 without a
    valid one), past the token subject's rate (429). As a ``SecurityBase`` the
    OpenAPI document shows it as the ``HTTPBearer`` scheme."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description="A JWT from `prism-backends token issue`.")
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise Unauthenticated("missing Authorization: Bearer <token> header")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        principal = runtime_of(request).verifier.verify(token)
        limits: RequestLimits = request.app.state.limits
        limits.check_principal(request.client.host if request.client else None, principal.subject)
        return principal


get_principal = BearerPrincipal()

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
DomainQuery = Annotated[
    str | None,
    Query(alias="domainID", description="Optional; must equal the path's domain id."),
]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


MAX_BODY_BYTES = 64 * 1024


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


async def read_body(request: Request) -> bytes:
    """The raw body, refused past MAX_BODY_BYTES (a CVM request is a few hundred bytes)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body must be at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
