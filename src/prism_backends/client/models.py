"""The shapes the client returns.

Every shape is the service's own wire model (``cvms/schemas.py``,
``agents/schemas.py``, ``offerings/schemas.py``: plain pydantic, importable
without the server), so client and service cannot drift apart. Every model
ignores fields it does not know, so a newer service does not break an older
client.
"""

from __future__ import annotations

from prism_backends.agents.schemas import (
    AgentConfigOut,
    CertificateList,
    EventOut,
    EventPage,
)
from prism_backends.agents.schemas import CertificateOut as Certificate
from prism_backends.cvms.schemas import (
    AttestationPolicyOut,
    AttestationStats,
    CVMOut,
    CVMPage,
    ErrorOut,
    StatSample,
    StatsOut,
)
from prism_backends.offerings.schemas import (
    Offerings,
    PlatformOffer,
    ProviderOffer,
    UnavailableProvider,
    VcpuOffer,
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
    "PlatformOffer",
    "ProviderOffer",
    "StatSample",
    "StatsOut",
    "UnavailableProvider",
    "VcpuOffer",
]
