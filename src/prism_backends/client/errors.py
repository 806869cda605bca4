"""What the client raises: one base, an ``APIError`` per kind of answer the
service gives, and the failures of the client's own waiting.

Every ``APIError`` carries the HTTP status and the service's short ``code``
(the ``error`` field of ``{"error", "message"}``, e.g. ``not_found``,
``unauthorized``, ``conflict``), so a caller can tell apart two 409s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prism_backends.cvms.schemas import CVMOut


class ClientError(Exception):
    """Base of everything this client raises."""


class APIError(ClientError):
    """The service answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(APIError):
    """400: the request was refused as invalid; the message names the field."""


class AuthError(APIError):
    """401 (no valid token) or 403 (the token may not do this in this domain)."""


class NotFound(APIError):
    """404: no such CVM (or certificate, or route) in the domain."""


class Conflict(APIError):
    """409: the name is taken, the CVM is deleted, no policy yet, an
    Idempotency-Key reused with another request..."""


class RateLimited(APIError):
    """429: too many requests; ``retry_after`` is the seconds the service asked to wait."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class Unavailable(APIError):
    """503: the service cannot reach its store right now; ``retry_after`` as for 429."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class TransportError(ClientError):
    """The service could not be reached or did not answer in time (no HTTP answer)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class UnexpectedResponse(ClientError):
    """A success status whose body is not what the API documents (a proxy's page, say)."""


class CVMFailed(ClientError):
    """A CVM waited for will not run: provisioning failed (``reason`` is the
    CVM's ``error``) or it was deleted meanwhile."""

    def __init__(self, cvm: CVMOut, reason: str) -> None:
        super().__init__(f"CVM {cvm.id} {reason}")
        self.cvm = cvm
        self.reason = reason


class WaitTimeout(ClientError, TimeoutError):
    """A CVM was not running within the time given; ``cvm`` is how it was last seen."""

    def __init__(self, cvm: CVMOut, timeout: float) -> None:
        super().__init__(
            f"CVM {cvm.id} not running after {timeout:g} s (state {cvm.state}, status {cvm.status})"
        )
        self.cvm = cvm
        self.timeout = timeout
