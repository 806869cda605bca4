"""What ``Client`` and ``AsyncClient`` share: every route as a ``Call`` (method,
path, query, body, and how to read the answer), the mapping of error answers to
exceptions, pagination and the verdict of a wait. No I/O here: the two clients
only send a ``Call`` with httpx, each in its own way, and hand the response back.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from prism_backends import __version__
from prism_backends.client import errors
from prism_backends.client.models import (
    AgentConfigOut,
    AttestationPolicyOut,
    Certificate,
    CertificateList,
    CVMOut,
    CVMPage,
    EventPage,
    Offerings,
    StatsOut,
)
from prism_backends.client.tokens import domain_claim

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

USER_AGENT = f"prism-backends-client/{__version__}"
DEFAULT_TIMEOUT = 10.0
# The service's page ceilings (cvms/paging.py): the pagination helpers ask for full pages.
MAX_CVM_PAGE = 100
MAX_EVENT_PAGE = 100

Params = Mapping[str, str | int | None]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request to send, and how to read its successful answer."""

    method: str
    path: str  # relative to the base URL
    read: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def settings(base_url: str, token: str, domain: str | None) -> tuple[str, dict[str, str], str]:
    """The checked base URL, the headers every request carries, and the domain
    id (the token's own if none is given)."""
    url = base_url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base URL must start with http:// or https://, not {base_url!r}")
    if not token:
        raise ValueError("a bearer token is required")
    domain = domain or domain_claim(token)
    if not domain:
        raise ValueError("no domain id given, and the token names no single domain")
    headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
    return url + "/", headers, domain


# --- answers ---------------------------------------------------------------------------------


def outcome(call: Call[T], response: httpx.Response) -> T:
    """The call's result, or the error the answer stands for raised."""
    if response.is_success:
        return call.read(response)
    raise error_for(response)


def error_for(response: httpx.Response) -> errors.APIError:
    """The exception for an error answer, with the service's code and message
    (or, for an answer that is not the service's JSON, ``http_<status>``)."""
    status = response.status_code
    code, message = f"http_{status}", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        message = text[:200] if text else message
    else:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            code = body["error"]
            message = str(body.get("message", "")) or code
    if status == 429:
        return errors.RateLimited(status, code, message, retry_after(response))
    if status == 503:
        return errors.Unavailable(status, code, message, retry_after(response))
    kind = _KINDS.get(status, errors.APIError)
    return kind(status, code, message)


_KINDS: dict[int, type[errors.APIError]] = {
    400: errors.BadRequest,
    401: errors.AuthError,
    403: errors.AuthError,
    404: errors.NotFound,
    409: errors.Conflict,
}


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the service sends whole seconds; a date is ignored)."""
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def transport_error(base_url: str, exc: httpx.TransportError) -> errors.TransportError:
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer in time ({exc.__class__.__name__})"
    else:
        reason = str(exc) or exc.__class__.__name__
    return errors.TransportError(base_url.rstrip("/"), reason)


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    def read(response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise errors.UnexpectedResponse(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} answer is not a {model.__name__}: {exc}"
            ) from exc

    return read


def _nothing(_response: httpx.Response) -> None:
    return None


def _policy_bytes(response: httpx.Response) -> bytes:
    policy = _model(AttestationPolicyOut)(response)
    try:
        return base64.b64decode(policy.attestation_policy, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.UnexpectedResponse(f"attestation_policy is not base64: {exc}") from exc


# --- the routes --------------------------------------------------------------------------------


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


def _query(params: Params) -> dict[str, str]:
    return {key: str(value) for key, value in params.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Routes:
    """Every route of the public API, for one domain."""

    domain: str

    def _cvms(self, *rest: str | int) -> str:
        return "/".join([_segment(self.domain), "cvms", *map(_segment, rest)])

    def create_cvm(
        self,
        *,
        provider: str,
        vcpus: int,
        cc_platform: str,
        name: str,
        agent_log_level: str,
        agent_url: str | None,
        idempotency_key: str | None,
    ) -> Call[CVMOut]:
        body: dict[str, str] = {"name": name, "agent_log_level": agent_log_level}
        if agent_url is not None:
            body["agent_url"] = agent_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        path = self._cvms(provider, vcpus, cc_platform)
        return Call("POST", path, _model(CVMOut), json=body, headers=headers)

    def list_cvms(self, filters: Params, *, limit: int | None, offset: int | None) -> Call[CVMPage]:
        params = _query({**filters, "limit": limit, "offset": offset})
        return Call("GET", self._cvms(), _model(CVMPage), params=params)

    def get_cvm(self, cvm_id: str) -> Call[CVMOut]:
        return Call("GET", self._cvms(cvm_id), _model(CVMOut))

    def delete_cvm(self, cvm_id: str) -> Call[None]:
        return Call("DELETE", self._cvms(cvm_id), _nothing)

    def statistics(
        self, cvm_id: str, *, days: int | None, limit: int | None, offset: int | None
    ) -> Call[StatsOut]:
        params = _query({"days": days, "limit": limit, "offset": offset})
        return Call("GET", self._cvms(cvm_id, "statistics"), _model(StatsOut), params=params)

    def attestation_policy(self, cvm_id: str, *, policy_format: str | None) -> Call[bytes]:
        params = _query({"format": policy_format})
        return Call("GET", self._cvms(cvm_id, "attestation_policy"), _policy_bytes, params=params)

    def agent_config(self, cvm_id: str) -> Call[AgentConfigOut]:
        return Call("GET", self._cvms(cvm_id, "agent_config"), _model(AgentConfigOut))

    def events(self, cvm_id: str, *, limit: int | None, offset: int | None) -> Call[EventPage]:
        params = _query({"limit": limit, "offset": offset})
        return Call("GET", self._cvms(cvm_id, "events"), _model(EventPage), params=params)

    def offerings(self) -> Call[Offerings]:
        return Call("GET", f"{_segment(self.domain)}/offerings", _model(Offerings))

    def certificates(self, cvm_id: str) -> Call[CertificateList]:
        return Call("GET", self._cvms(cvm_id, "certificates"), _model(CertificateList))

    def issue_certificate(self, cvm_id: str) -> Call[Certificate]:
        return Call("POST", self._cvms(cvm_id, "certificates"), _model(Certificate))

    def renew_certificate(self, cvm_id: str, serial: str) -> Call[Certificate]:
        path = self._cvms(cvm_id, "certificates", serial, "renew")
        return Call("POST", path, _model(Certificate))

    def revoke_certificate(self, cvm_id: str, serial: str) -> Call[Certificate]:
        path = self._cvms(cvm_id, "certificates", serial, "revoke")
        return Call("POST", path, _model(Certificate))


def list_filters(
    *, name: str | None, status: str | None, cc_platform: str | None, days: int | None
) -> dict[str, str | int | None]:
    return {"name": name, "status": status, "cc_platform": cc_platform, "days": days}


# --- pagination and waiting ----------------------------------------------------------------------


def next_offset(offset: int, shown: int, total: int) -> int | None:
    """Where the next page starts, or None after the last one (an empty page
    ends it too, should the total shrink meanwhile)."""
    following = offset + shown
    return following if shown and following < total else None


def running(cvm: CVMOut) -> bool:
    """Whether a CVM waited for is running; raises ``CVMFailed`` if it never will."""
    if cvm.status == "running":
        return True
    if cvm.state == "failed":
        raise errors.CVMFailed(cvm, f"failed: {cvm.error or 'no reason given'}")
    if cvm.state in ("deleting", "deleted"):
        raise errors.CVMFailed(cvm, f"was deleted (state {cvm.state})")
    return False


class Wait:
    """The bookkeeping of ``wait_running``, with the sleeping left to the client:
    look (``seen`` or ``failed``), then sleep ``pause()`` seconds, until ``seen``
    says running. A 429 or 503 meanwhile only delays the next look."""

    def __init__(
        self, timeout: float, poll: float, on_progress: Callable[[CVMOut], object] | None
    ) -> None:
        if timeout < 0 or poll <= 0:
            raise ValueError("timeout must be >= 0 and poll > 0")
        self._timeout, self._poll, self._on_progress = timeout, poll, on_progress
        self._deadline = time.monotonic() + timeout
        self._next_pause = poll
        self._last: CVMOut | None = None
        self._passing: errors.APIError | None = None

    def seen(self, cvm: CVMOut) -> bool:
        """Whether the CVM is running now (``CVMFailed`` if it never will be)."""
        self._last, self._next_pause = cvm, self._poll
        if self._on_progress is not None:
            self._on_progress(cvm)
        return running(cvm)

    def failed(self, exc: errors.APIError) -> None:
        """Note a failed look; raise it unless it is one that passes (429, 503)."""
        if not isinstance(exc, errors.RateLimited | errors.Unavailable):
            raise exc
        self._passing, self._next_pause = exc, max(self._poll, exc.retry_after or 0.0)

    def pause(self) -> float:
        """Seconds to sleep before the next look; ``WaitTimeout`` once time is up."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            if self._last is None:
                assert self._passing is not None  # only a failed look leaves no CVM seen
                raise self._passing
            raise errors.WaitTimeout(self._last, self._timeout)
        return min(self._next_pause, remaining)
