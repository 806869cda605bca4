"""Wire shapes of the agent routes. Plain pydantic, no store: the client SDK
(``prism_backends.client``) reads responses with these very models."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydantic import BaseModel, Field

from prism_backends.cvms.schemas import rfc3339


class AgentConfigOut(BaseModel):
    cvm_id: str
    agents_address: str = Field(description="host:port of the agents' gRPC endpoint (mTLS).")
    server_name: str = Field(description="The name to verify in the endpoint's certificate.")
    ca_cert: str = Field(description="PEM of the CA that signed the endpoint and this agent.")
    client_cert: str = Field(description="PEM of this CVM's client certificate.")
    client_key: str = Field(description="PEM of its private key: keep it secret.")
    log_level: str


class ShowsEvent(Protocol):
    """What an event's wire form reads: an ``agents.models.AgentEvent`` row."""

    id: int
    cvm_id: str
    kind: str
    occurred_at: datetime
    received_at: datetime
    level: str
    message: str
    computation_id: str
    details: str


class EventOut(BaseModel):
    id: str
    cvm_id: str
    kind: str = Field(
        description="log, event, run_result, stop_result, state, attestation, "
        "azure_token, connected, disconnected or certificate."
    )
    timestamp: str = Field(description="When the agent says it happened.")
    received_at: str
    level: str
    message: str
    computation_id: str
    details: dict[str, object]

    @classmethod
    def of(cls, event: ShowsEvent) -> EventOut:
        details = json.loads(event.details) if event.details else {}
        return cls(
            id=str(event.id),
            cvm_id=event.cvm_id,
            kind=event.kind,
            timestamp=rfc3339(event.occurred_at),
            received_at=rfc3339(event.received_at),
            level=event.level,
            message=event.message,
            computation_id=event.computation_id,
            details=details if isinstance(details, dict) else {"value": details},
        )


class EventPage(BaseModel):
    events: list[EventOut]
    total: int
    limit: int
    offset: int


class ShowsCredential(Protocol):
    """What a certificate's wire form reads: an ``agents.models.AgentCredential`` row."""

    serial: str
    cert_pem: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None


class CertificateOut(BaseModel):
    serial: str = Field(description="Hex, as in the certificate.")
    not_before: str
    not_after: str
    state: str = Field(
        description="active (the one the agent uses), pending (issued after it, handed "
        "out by agent_config, not presented yet), revoked or expired."
    )
    revoked_at: str | None
    fingerprint_sha256: str = Field(description="SHA-256 of the certificate's DER, hex.")

    @classmethod
    def of(cls, credential: ShowsCredential, state: str) -> CertificateOut:
        return cls(
            serial=credential.serial,
            not_before=rfc3339(credential.not_before),
            not_after=rfc3339(credential.not_after),
            state=state,
            revoked_at=rfc3339(credential.revoked_at) if credential.revoked_at else None,
            fingerprint_sha256=_fingerprint(credential.cert_pem),
        )


class CertificateList(BaseModel):
    certificates: list[CertificateOut] = Field(description="Newest first.")
    total: int


def _fingerprint(cert_pem: str) -> str:
    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    return certificate.fingerprint(hashes.SHA256()).hex()
