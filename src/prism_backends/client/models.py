"""The shapes the client returns.

The CVM, statistics, policy, agent and event shapes are the service's own wire
models (``cvms/schemas.py``, ``agents/schemas.py``: plain pydantic, importable
without the server), so client and service cannot drift apart. Offerings and
certificates are written here from the agreed contract (docs: CONTRACTS of
issue 12) until their routes' schemas can be shared the same way. Every model
ignores fields it does not know, so a newer service does not break an older
client.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from prism_backends.agents.schemas import AgentConfigOut, EventOut, EventPage
from prism_backends.cvms.schemas import (
    AttestationPolicyOut,
    AttestationStats,
    CVMOut,
    CVMPage,
    ErrorOut,
    StatSample,
    StatsOut,
)

__all__ = [
    "AgentConfigOut",
    "AttestationPolicyOut",
    "AttestationStats",
    "CVMOut",
    "CVMPage",
    "Certificate",
    "CertificateList",
    "ErrorOut",
    "EventOut",
    "EventPage",
    "Offerings",
    "PlatformOffering",
    "ProviderOffering",
    "StatSample",
    "StatsOut",
    "UnavailableProvider",
    "VcpuOffering",
]


class VcpuOffering(BaseModel):
    vcpus: int
    monthly_cost_estimate: str = Field(examples=["$12.34"])


class PlatformOffering(BaseModel):
    cc_platform: str = Field(description="The create route's spelling: sev-snp or tdx.")
    vcpus: list[VcpuOffering]


class ProviderOffering(BaseModel):
    name: str
    provisions_instantly: bool
    platforms: list[PlatformOffering]


class UnavailableProvider(BaseModel):
    name: str
    reason: str


class Offerings(BaseModel):
    """What a domain can create now, and the configured providers that cannot work."""

    providers: list[ProviderOffering]
    unavailable: list[UnavailableProvider] = []


class Certificate(BaseModel):
    """One of a CVM's agent client certificates."""

    serial: str = Field(description="Hex.")
    not_before: str
    not_after: str
    state: str = Field(description="active, pending, revoked or expired.")
    revoked_at: str | None = None
    fingerprint_sha256: str


class CertificateList(BaseModel):
    certificates: list[Certificate] = Field(description="Newest first.")
    total: int
