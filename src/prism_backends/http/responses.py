"""Documented error responses, shared by every router."""

from __future__ import annotations

from typing import Any

from prism_backends.cvms.schemas import ErrorOut

COMMON_ERRORS = (400, 401, 403, 429, 503)

_DESCRIPTIONS = {
    400: "Bad input; the message names the field.",
    401: "Missing, malformed, expired or wrongly signed token.",
    403: "The token grants no such right in this domain.",
    404: "No such CVM in this domain.",
    409: "Conflict; the message says why.",
    413: "The body is larger than 64 KiB.",
    415: "The body is not application/json.",
    429: "Too many requests from this address or token; Retry-After says when to retry.",
    503: "The store is unavailable; Retry-After says when to retry.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these statuses, each an ErrorOut body."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}
