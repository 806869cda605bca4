"""Store access for attestation. The CVM is known from the agent's certificate,
so these are system-scoped by CVM id (the agents endpoint authenticated it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from prism_backends.agents.models import AgentCredential
from prism_backends.cvms.models import CVM


@dataclass(frozen=True, slots=True)
class EvidenceContext:
    cvm_id: str
    domain_id: str
    policy: bytes | None
    cert_pem: str
    provider: str = ""


def evidence_context(
    session: Session, cvm_id: str, *, serial: str | None, now: datetime
) -> EvidenceContext | None:
    """What evidence from this CVM is appraised against: its policy, and the
    certificate the evidence must be bound to (the one with ``serial``; without
    one, the CVM's newest valid certificate)."""
    query = (
        select(CVM.domain_id, CVM.attestation_policy, AgentCredential.cert_pem, CVM.provider)
        .join(AgentCredential, AgentCredential.cvm_id == CVM.id)
        .where(CVM.id == cvm_id, CVM.deleted_at.is_(None))
    )
    if serial is not None:
        query = query.where(AgentCredential.serial == serial)
    else:
        query = query.where(
            AgentCredential.revoked_at.is_(None), AgentCredential.not_after > now
        ).order_by(AgentCredential.id.desc())
    row = session.execute(query.limit(1)).first()
    if row is None:
        return None
    return EvidenceContext(
        cvm_id=cvm_id, domain_id=row[0], policy=row[1], cert_pem=row[2], provider=row[3]
    )


def record_accepted(
    session: Session,
    cvm_id: str,
    *,
    evidence: bytes,
    token: str,
    now: datetime,
    pinned_policy: bytes | None = None,
) -> None:
    values: dict[str, object] = {
        "attestation": evidence,
        "attestation_token": token,
        "attestation_error": "",
        "attestations_verified": CVM.attestations_verified + 1,
        "attested_at": now,
        "updated_at": now,
    }
    if pinned_policy is not None:
        values["attestation_policy"] = pinned_policy
        values["attestation_policy_source"] = "pinned"
    session.execute(
        update(CVM)
        .where(CVM.id == cvm_id, CVM.deleted_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def record_refused(session: Session, cvm_id: str, *, reason: str, now: datetime) -> None:
    """No token for refused evidence, and the one issued before no longer stands.
    Nor is the refused evidence kept (an untrusted agent would store what it
    likes): its digest and size go into the refusal's event."""
    session.execute(
        update(CVM)
        .where(CVM.id == cvm_id, CVM.deleted_at.is_(None))
        .values(
            attestation=None,
            attestation_token="",
            attestation_error=reason,
            attestations_failed=CVM.attestations_failed + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
