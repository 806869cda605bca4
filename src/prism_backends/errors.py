"""One error base for the whole service.

Every error a user can cause is an ``AppError`` subclass carrying its HTTP
status and a short machine-readable code; the single handler in
``prism_backends.http.errors`` renders it as ``{"error", "message"}``.
"""

from __future__ import annotations


class AppError(Exception):
    """Base of every expected failure: status, short code and a human message."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class Unauthenticated(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="prism-backends"'})


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(AppError):
    status_code = 405
    code = "method_not_allowed"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class CreatedConcurrently(Conflict):
    """Another transaction inserted the same live name or Idempotency-Key first:
    the whole transaction is lost, so only the boundary can try again."""


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class TooManyRequests(AppError):
    status_code = 429
    code = "too_many_requests"


class StoreUnavailable(AppError):
    status_code = 503
    code = "store_unavailable"
    retry_after_seconds = 2  # a restart or failover is usually that quick to begin answering

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": str(self.retry_after_seconds)})
