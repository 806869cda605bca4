"""What the agent routes do: the configuration an agent dials in with, its
certificates (issued, renewed, revoked), and what it reported."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from prism_backends.agents import repository
from prism_backends.agents.models import AgentCredential, AgentEvent
from prism_backends.agents.pki import AgentCA
from prism_backends.agents.sealing import Sealer
from prism_backends.auth.permissions import Permission
from prism_backends.auth.principal import Principal
from prism_backends.cvms import repository as cvms_repository
from prism_backends.cvms.paging import parse_page
from prism_backends.db.base import utcnow
from prism_backends.errors import Conflict, NotFound
from prism_backends.providers.base import AgentBootstrap


@dataclass(frozen=True)
class CredentialIssuer:
    """Gives each new CVM a client certificate naming it, its key sealed at rest."""

    ca: AgentCA
    sealer: Sealer
    validity: timedelta

    def issue(
        self, connection: Connection, *, cvm_id: str, domain_id: str, now: datetime
    ) -> AgentCredential:
        """Store a new certificate as one Core insert (a create writes without an
        ORM Session; the certificate routes pass their Session's connection)."""
        credential = self.new(cvm_id=cvm_id, domain_id=domain_id, now=now)
        repository.insert_credential(connection, credential)
        return credential

    def new(self, *, cvm_id: str, domain_id: str, now: datetime) -> AgentCredential:
        """Sign a certificate and seal its key, touching no store: a create does
        this before its transaction, so SQLite's write lock is not held for it."""
        issued = self.ca.issue_client(cvm_id, domain_id, self.validity, now)
        return AgentCredential(
            cvm_id=cvm_id,
            serial=format(issued.serial, "x"),
            cert_pem=issued.cert_pem.decode(),
            sealed_key=self.sealer.seal(issued.key_pem, bound_to=cvm_id),
            not_before=issued.not_before,
            not_after=issued.not_after,
            revoked_at=None,
            presented_at=None,
            expiry_warned_at=None,
        )


@dataclass(frozen=True)
class BootstrapSource:
    """System-scoped, for the lifecycle workers: what a CVM's agent needs to
    dial in, for drivers that start the agent themselves (a host manager, user data)."""

    ca: AgentCA
    sealer: Sealer
    agents_address: str

    def __call__(self, session: Session, domain_id: str, cvm_id: str) -> AgentBootstrap | None:
        credential = repository.newest_valid(session, domain_id, cvm_id, utcnow())
        if credential is None:
            return None
        return AgentBootstrap(
            server_url=self.agents_address,
            ca_cert_pem=self.ca.cert_pem,
            client_cert_pem=credential.cert_pem.encode(),
            client_key_pem=self.sealer.open(credential.sealed_key, bound_to=cvm_id),
        )


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent needs to dial in, as ``prism-backends agent`` reads it."""

    cvm_id: str
    agents_address: str
    server_name: str
    ca_cert: str
    client_cert: str
    client_key: str
    log_level: str


def agent_config(
    principal: Principal,
    session: Session,
    *,
    ca: AgentCA,
    sealer: Sealer,
    domain_id: str,
    cvm_id: str,
    agents_address: str,
) -> AgentConfig:
    # It hands out a private key: creating rights, not reading ones.
    principal.require(domain_id, Permission.CREATE)
    cvm = cvms_repository.get_live(session, domain_id, cvm_id)
    if cvm is None:
        raise NotFound(f"no CVM {cvm_id!r} in domain {domain_id!r}")
    credential = repository.newest_valid(session, domain_id, cvm_id, utcnow())
    if credential is None:
        raise Conflict(
            "this CVM has no valid agent certificate: issue one "
            f"(POST .../cvms/{cvm_id}/certificates)"
        )
    return AgentConfig(
        cvm_id=cvm.id,
        agents_address=agents_address,
        server_name=agents_address.rsplit(":", 1)[0].strip("[]"),
        ca_cert=ca.cert_pem.decode(),
        client_cert=credential.cert_pem,
        client_key=sealer.open(credential.sealed_key, bound_to=cvm.id).decode(),
        log_level=cvm.agent_log_level,
    )


def list_events(
    principal: Principal,
    session: Session,
    *,
    domain_id: str,
    cvm_id: str,
    limit: str | None,
    offset: str | None,
) -> tuple[list[AgentEvent], int, int, int]:
    principal.require(domain_id, Permission.READ)
    page_limit, page_offset = parse_page(limit, offset)
    if cvms_repository.get_live(session, domain_id, cvm_id) is None:
        raise NotFound(f"no CVM {cvm_id!r} in domain {domain_id!r}")
    rows, total = repository.events_page(
        session, domain_id, cvm_id, limit=page_limit, offset=page_offset
    )
    return rows, total, page_limit, page_offset


# --- certificates ------------------------------------------------------------------

# A bound on what a tenant can pile up: certificates standing at once per CVM
# (the active one, and renewals its agent has not picked up yet).
MAX_VALID_CERTIFICATES = 5


class CertificateState(StrEnum):
    ACTIVE = "active"  # valid, and the one the agent uses
    PENDING = "pending"  # valid, issued after it: handed out, not presented yet
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Certificate:
    credential: AgentCredential
    state: CertificateState


def certificate_states(credentials: list[AgentCredential], now: datetime) -> list[Certificate]:
    """``credentials`` of one CVM, newest first, with their states. The active
    one is the newest valid one the agent has connected with; while it has
    connected with none of the valid ones, the oldest valid one (what it was
    set up with). Every other valid one is pending."""
    valid = [c for c in credentials if c.revoked_at is None and c.not_after > now]
    presented = [c for c in valid if c.presented_at is not None]
    active = presented[0] if presented else (valid[-1] if valid else None)
    found = []
    for credential in credentials:
        if credential.revoked_at is not None:
            state = CertificateState.REVOKED
        elif credential.not_after <= now:
            state = CertificateState.EXPIRED
        elif credential is active:
            state = CertificateState.ACTIVE
        else:
            state = CertificateState.PENDING
        found.append(Certificate(credential, state))
    return found


def list_certificates(
    principal: Principal, session: Session, *, domain_id: str, cvm_id: str
) -> list[Certificate]:
    principal.require(domain_id, Permission.READ)
    if cvms_repository.get_live(session, domain_id, cvm_id) is None:
        raise NotFound(f"no CVM {cvm_id!r} in domain {domain_id!r}")
    return certificate_states(repository.credentials_of(session, domain_id, cvm_id), utcnow())


def issue_certificate(
    principal: Principal,
    session: Session,
    *,
    issuer: CredentialIssuer,
    domain_id: str,
    cvm_id: str,
) -> Certificate:
    """A new certificate, pending until the agent connects with it."""
    principal.require(domain_id, Permission.CREATE)
    _live_cvm(session, domain_id, cvm_id)
    return _issue(session, issuer, domain_id, cvm_id)


def renew_certificate(
    principal: Principal,
    session: Session,
    *,
    issuer: CredentialIssuer,
    domain_id: str,
    cvm_id: str,
    serial: str,
) -> Certificate:
    """A successor to ``serial``, which stays valid until the agent connects
    with the new one (then it is revoked) or until it expires."""
    principal.require(domain_id, Permission.CREATE)
    _live_cvm(session, domain_id, cvm_id)
    renewed = _credential(session, domain_id, cvm_id, serial)
    if renewed.revoked_at is not None:
        raise Conflict(f"certificate {renewed.serial} is revoked: issue a new one instead")
    return _issue(session, issuer, domain_id, cvm_id)


def revoke_certificate(
    principal: Principal, session: Session, *, domain_id: str, cvm_id: str, serial: str
) -> Certificate:
    """Refused from now on; a stream open with it ends at the next heartbeat."""
    principal.require(domain_id, Permission.DELETE)
    _live_cvm(session, domain_id, cvm_id)
    revoked = _credential(session, domain_id, cvm_id, serial)
    if revoked.revoked_at is not None:
        raise Conflict(f"certificate {revoked.serial} is already revoked")
    revoked.revoked_at = utcnow()
    session.flush()
    return Certificate(revoked, CertificateState.REVOKED)


def _live_cvm(session: Session, domain_id: str, cvm_id: str) -> None:
    deleted = repository.cvm_deleted(session, domain_id, cvm_id)
    if deleted is None:
        raise NotFound(f"no CVM {cvm_id!r} in domain {domain_id!r}")
    if deleted:
        raise Conflict(f"CVM {cvm_id!r} was deleted: its certificates are all revoked")


_SERIAL = re.compile(r"0*[0-9a-fA-F]{1,40}")


def _credential(session: Session, domain_id: str, cvm_id: str, serial: str) -> AgentCredential:
    # Serials are kept as the certificate has them (lower-case hex, no leading zeros).
    found = None
    if _SERIAL.fullmatch(serial):
        normal = format(int(serial, 16), "x")
        found = repository.credential_by_serial(session, domain_id, cvm_id, normal)
    if found is None:
        raise NotFound(f"CVM {cvm_id!r} has no certificate with serial {serial!r}")
    return found


def _issue(session: Session, issuer: CredentialIssuer, domain_id: str, cvm_id: str) -> Certificate:
    now = utcnow()
    before = certificate_states(repository.credentials_of(session, domain_id, cvm_id), now)
    standing = [c for c in before if c.state in (CertificateState.ACTIVE, CertificateState.PENDING)]
    if len(standing) >= MAX_VALID_CERTIFICATES:
        raise Conflict(
            f"this CVM already holds {len(standing)} valid certificates, the most it may: "
            "revoke one first"
        )
    issued = issuer.issue(session.connection(), cvm_id=cvm_id, domain_id=domain_id, now=now)
    # Pending, unless it is the only valid one (the agent had nothing else).
    state = CertificateState.PENDING if standing else CertificateState.ACTIVE
    return Certificate(issued, state)
