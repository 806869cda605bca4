"""The public keys attestation tokens are signed with, as a JWKS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from prism_backends.attestation import keys
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.http.deps import RuntimeDep
from prism_backends.http.responses import error_responses

router = APIRouter(tags=["attestation"])


@router.get(
    "/.well-known/jwks.json",
    summary="Keys that verify attestation tokens (public; no token needed)",
    responses={
        200: {"description": "A JWKS: the current key and those whose tokens may still be valid."},
        **error_responses(429, 503),
    },
)
def jwks(runtime: RuntimeDep) -> JSONResponse:
    with unit_of_work(runtime.sessions, read_only=True) as session:
        document: dict[str, Any] = keys.published_jwks(session, utcnow())
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})
