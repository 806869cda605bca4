"""What a log line says it is about: the request's id, and the domain and
CVM where known. Set by the HTTP middleware (read from the matched route's
path parameters, which routing fills in later on the same scope) and by the
lifecycle worker for the CVM it handles."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# A caller's id is kept only when it cannot break a log line or a header.
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

request_id: ContextVar[str] = ContextVar("request_id", default="")
cvm_id: ContextVar[str] = ContextVar("cvm_id", default="")
_scope: ContextVar[MutableMapping[str, Any] | None] = ContextVar("scope", default=None)


def accepted_request_id(offered: str | None) -> str:
    """The caller's ``X-Request-ID`` if it is a sane token, else a new one."""
    if offered and _ACCEPTABLE_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def enter_request(scope: MutableMapping[str, Any], rid: str) -> None:
    request_id.set(rid)
    _scope.set(scope)


def current() -> dict[str, str]:
    """The context of a log line: request id, domain, CVM id (each only when known)."""
    known: dict[str, str] = {}
    if rid := request_id.get():
        known["request_id"] = rid
    scope = _scope.get()
    params = scope.get("path_params", {}) if scope is not None else {}
    if domain := params.get("domainID"):
        known["domain"] = str(domain)
    if cvm := cvm_id.get() or params.get("id"):
        known["cvm_id"] = str(cvm)
    return known


@contextmanager
def about_cvm(cvm: str) -> Iterator[None]:
    """Log lines within are about this CVM."""
    token = cvm_id.set(cvm)
    try:
        yield
    finally:
        cvm_id.reset(token)
