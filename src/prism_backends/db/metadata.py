"""All tables, imported so that the metadata is complete for migrations."""

from __future__ import annotations

from prism_backends.agents.models import AgentCredential, AgentEvent, AgentSession
from prism_backends.attestation.models import TokenSigningKey
from prism_backends.cvms.models import CVM, CVMTally
from prism_backends.db.base import Base
from prism_backends.statistics.models import SampledSlot, UptimeDay

metadata = Base.metadata

__all__ = [
    "CVM",
    "AgentCredential",
    "AgentEvent",
    "AgentSession",
    "CVMTally",
    "SampledSlot",
    "TokenSigningKey",
    "UptimeDay",
    "metadata",
]
