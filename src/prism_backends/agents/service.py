"""What the agent routes do, and the credential every CVM gets at create."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from prism_backends.agents import repository
from prism_backends.agents.models import AgentCredential, AgentEvent
from prism_backends.agents.pki import AgentCA
from prism_backends.agents.sealing import Sealer
from prism_backends.auth.permissions import Permission
from prism_backends.auth.principal import Principal
from prism_backends.cvms import repository as cvms_repository
from prism_backends.cvms.paging import parse_page
from prism_backends.errors import Conflict, NotFound
from prism_backends.providers.base import AgentBootstrap


@dataclass(frozen=True)
class CredentialIssuer:
    """Gives each new CVM a client certificate naming it, its key sealed at rest."""

    ca: AgentCA
    sealer: Sealer
    validity: timedelta

    def issue(self, session: Session, *, cvm_id: str, domain_id: str, now: datetime) -> None:
        issued = self.ca.issue_client(cvm_id, domain_id, self.validity, now)
        repository.add_credential(
            session,
            AgentCredential(
                cvm_id=cvm_id,
                serial=format(issued.serial, "x"),
                cert_pem=issued.cert_pem.decode(),
                sealed_key=self.sealer.seal(issued.key_pem, bound_to=cvm_id),
                not_after=issued.not_after,
                revoked_at=None,
            ),
        )


@dataclass(frozen=True)
class BootstrapSource:
    """System-scoped, for the lifecycle workers: what a CVM's agent needs to
    dial in, for drivers that start the agent themselves (a host manager, user data)."""

    ca: AgentCA
    sealer: Sealer
    agents_address: str

    def __call__(self, session: Session, domain_id: str, cvm_id: str) -> AgentBootstrap | None:
        credential = repository.credential_of(session, domain_id, cvm_id)
        if credential is None or credential.revoked_at is not None:
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
    credential = repository.credential_of(session, domain_id, cvm_id)
    if credential is None or credential.revoked_at is not None:
        raise Conflict("this CVM has no agent credential (it was created before agents existed)")
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
