"""The wire shapes of the CVM routes, exactly as the contract fixes them.

Plain pydantic and pure modules only: the client SDK (``prism_backends.client``)
reads answers with these very models (an import-linter contract holds it)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prism_backends.pricing.core import format_usd
from prism_backends.vocabulary import LogLevel

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
MAX_NAME_LENGTH = 255


def rfc3339(moment: datetime | None) -> str:
    """UTC with a ``Z``, in whole seconds (cut, never rounded up into the
    future) as the source document shows them; Go's zero time for 'never'.
    Every route renders its times with this, so they all look alike."""
    if moment is None:
        return GO_ZERO_TIME
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
AGENT_SCHEMES = ("grpc", "grpcs", "https")


def agent_address(value: str) -> bool:
    """What an agent can be reached at: ``host:port``, or a gRPC or HTTPS URL
    with a host (never ``javascript:``, ``file:`` and the like)."""
    match = _HOST_PORT.fullmatch(value)
    if match:
        return 0 < int(match.group(1)) <= 65535
    parsed = urlsplit(value)
    if parsed.scheme.lower() not in AGENT_SCHEMES or not parsed.hostname:
        return False
    try:
        port = parsed.port
    except ValueError:
        return False
    return port is None or 0 < port <= 65535


class CreateCVMRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(description="1-255 characters after trimming; unique among live CVMs.")
    agent_log_level: LogLevel = Field(LogLevel.INFO, description="debug, info, warn or error.")
    agent_url: str | None = Field(
        None, max_length=2048, description="Only for provider 'external': where its agent runs."
    )

    @field_validator("name")
    @classmethod
    def _trimmed_name(cls, value: str) -> str:
        value = value.strip()
        if not 1 <= len(value) <= MAX_NAME_LENGTH:
            raise ValueError(f"must be 1-{MAX_NAME_LENGTH} characters after trimming")
        if not value.isprintable():
            raise ValueError("must not contain control characters")
        return value

    @field_validator("agent_url")
    @classmethod
    def _agent_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value.isprintable() or " " in value:
            raise ValueError("must not contain spaces or control characters")
        if not agent_address(value):
            raise ValueError("must be host:port or a grpc://, grpcs:// or https:// URL with a host")
        return value


class CVMOut(BaseModel):
    id: str
    name: str
    cvm_id: str
    agent_url: str
    status: str
    state: str
    created_at: str
    deleted_at: str
    provider: str
    vcpus: int
    attestation: str
    attestation_token: str
    agent_log_level: str
    monthly_cost_estimate: str = Field(examples=["$12.34"])
    cc_platform: str
    domain_id: str
    error: str = Field(description="Why provisioning failed; empty otherwise.")
    attestation_error: str = Field(
        description="Why the latest evidence was refused; empty once evidence verifies."
    )
    updated_at: str


class ShownCVM(NamedTuple):
    """What a CVM's wire form shows (``cvm_document``), and its evidence where
    it was read: the columns the view and list routes select
    (cvms/repository), in this order, or a CVM row's (``of``). A tuple rather
    than SQLAlchemy's ``Row``: reading a field of a ``Row`` by name costs
    about ten times reading it here (0.3 against 0.03 µs), and a page of 100
    CVMs reads 1,900 of them."""

    id: str
    name: str
    cvm_id: str
    agent_url: str
    status: str
    state: str
    created_at: datetime
    deleted_at: datetime | None
    provider: str
    vcpus: int
    attestation_token: str
    agent_log_level: str
    monthly_cost_cents: int
    cc_platform: str
    domain_id: str
    error: str
    attestation_error: str
    updated_at: datetime
    attestation: bytes | None = None  # selected last, and only where it is shown

    @classmethod
    def of(cls, cvm: object) -> ShownCVM:
        """A CVM row's fields (an ORM object, or anything with them all)."""
        return cls._make(getattr(cvm, name) for name in cls._fields)


def cvm_document(cvm: ShownCVM, evidence: bytes | None) -> dict[str, Any]:
    """A CVM's wire form (``CVMOut``, field for field and in its order) as
    plain data, ready for the JSON encoder: the routes that show CVMs render
    this directly rather than build and validate a model per CVM (a test holds
    it to ``CVMOut``). ``evidence`` is None where a list leaves it out."""
    return {
        "id": cvm.id,
        "name": cvm.name,
        "cvm_id": cvm.cvm_id,
        "agent_url": cvm.agent_url,
        "status": cvm.status,
        "state": cvm.state,
        "created_at": rfc3339(cvm.created_at),
        "deleted_at": rfc3339(cvm.deleted_at),
        "provider": cvm.provider,
        "vcpus": cvm.vcpus,
        "attestation": base64.b64encode(evidence).decode() if evidence else "",
        "attestation_token": cvm.attestation_token,
        "agent_log_level": cvm.agent_log_level,
        "monthly_cost_estimate": format_usd(cvm.monthly_cost_cents),
        "cc_platform": cvm.cc_platform,
        "domain_id": cvm.domain_id,
        "error": cvm.error,
        "attestation_error": cvm.attestation_error,
        "updated_at": rfc3339(cvm.updated_at),
    }


class CVMPage(BaseModel):
    cvms: list[CVMOut]
    total: int
    limit: int
    offset: int


class StatSample(BaseModel):
    id: str
    cvm_id: str
    timestamp: str
    status: bool


class AttestationStats(BaseModel):
    verified: int = Field(description="Evidence accepted since the CVM was created.")
    failed: int = Field(description="Evidence refused since the CVM was created.")
    last_error: str = Field(description="Why the latest evidence was refused, if it was.")
    last_verified_at: str = Field(description="When evidence last verified (zero time: never).")


class StatsOut(BaseModel):
    cvm_stats: list[StatSample]
    attestation: AttestationStats
    total: int = Field(description="Samples in the window, not just this page.")
    uptime: float = Field(
        description="Fraction of samples in the window with the agent up; 0 while there are "
        "none (total 0), so it is always a number."
    )


class AttestationPolicyOut(BaseModel):
    attestation_policy: str = Field(description="The stored policy bytes, base64.")


class ErrorOut(BaseModel):
    error: str = Field(examples=["bad_request"])
    message: str
