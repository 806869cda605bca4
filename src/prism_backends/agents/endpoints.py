"""Agent routes: the configuration an agent needs, its certificates, and what
agents reported."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from prism_backends.agents import service
from prism_backends.agents.schemas import (
    AgentConfigOut,
    CertificateList,
    CertificateOut,
    EventOut,
    EventPage,
)
from prism_backends.cvms import service as cvms_service
from prism_backends.db.engine import unit_of_work
from prism_backends.http.deps import DomainQuery, PrincipalDep, RuntimeDep
from prism_backends.http.responses import COMMON_ERRORS, error_responses

router = APIRouter(tags=["agents"])


@router.get(
    "/{domainID}/cvms/{id}/agent_config",
    response_model=AgentConfigOut,
    summary="Everything an agent needs to connect (needs cvms:create: it holds a private key)",
    responses=error_responses(*COMMON_ERRORS, 404, 409),
)
def view_agent_config(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    response: Response,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    domain_query: DomainQuery = None,
) -> AgentConfigOut:
    cvms_service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions, read_only=True) as session:
        config = service.agent_config(
            principal,
            session,
            ca=runtime.agent_ca,
            sealer=runtime.sealer,
            domain_id=domain_id,
            cvm_id=cvm_id,
            agents_address=runtime.settings.effective_agents_address,
        )
    # It holds the agent's private key: no cache, shared or private, may keep it.
    response.headers["Cache-Control"] = "no-store"
    return AgentConfigOut(**config.__dict__)


@router.get(
    "/{domainID}/cvms/{id}/events",
    response_model=EventPage,
    summary="The agent's logs and events, newest first",
    responses=error_responses(*COMMON_ERRORS, 404),
)
def list_events(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    domain_query: DomainQuery = None,
    limit: Annotated[str | None, Query(description="1-100, default 10.")] = None,
    offset: Annotated[str | None, Query(description=">= 0, default 0.")] = None,
) -> EventPage:
    cvms_service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions, read_only=True) as session:
        rows, total, page_limit, page_offset = service.list_events(
            principal, session, domain_id=domain_id, cvm_id=cvm_id, limit=limit, offset=offset
        )
        events = [EventOut.of(row) for row in rows]
    return EventPage(events=events, total=total, limit=page_limit, offset=page_offset)


# --- certificates ----------------------------------------------------------------------

_CERTIFICATE_RESPONSES = error_responses(*COMMON_ERRORS, 404, 409)
SerialPath = Annotated[str, Path(alias="serial", description="Hex, as the list shows it.")]


@router.get(
    "/{domainID}/cvms/{id}/certificates",
    response_model=CertificateList,
    summary="The agent's client certificates, newest first",
    responses=error_responses(*COMMON_ERRORS, 404),
)
def list_certificates(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    domain_query: DomainQuery = None,
) -> CertificateList:
    cvms_service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions, read_only=True) as session:
        found = service.list_certificates(principal, session, domain_id=domain_id, cvm_id=cvm_id)
        certificates = [
            CertificateOut.of(certificate.credential, certificate.state.value)
            for certificate in found
        ]
    return CertificateList(certificates=certificates, total=len(certificates))


@router.post(
    "/{domainID}/cvms/{id}/certificates",
    status_code=201,
    response_model=CertificateOut,
    summary="Issue another client certificate (pending until the agent connects with it)",
    responses=_CERTIFICATE_RESPONSES,
)
def issue_certificate(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    domain_query: DomainQuery = None,
) -> CertificateOut:
    cvms_service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions) as session:
        issued = service.issue_certificate(
            principal, session, issuer=runtime.credentials, domain_id=domain_id, cvm_id=cvm_id
        )
        return CertificateOut.of(issued.credential, issued.state.value)


@router.post(
    "/{domainID}/cvms/{id}/certificates/{serial}/renew",
    status_code=201,
    response_model=CertificateOut,
    summary="Issue a successor; the old one stays valid until the agent connects with it",
    responses=_CERTIFICATE_RESPONSES,
)
def renew_certificate(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    serial: SerialPath,
    domain_query: DomainQuery = None,
) -> CertificateOut:
    cvms_service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions) as session:
        renewed = service.renew_certificate(
            principal,
            session,
            issuer=runtime.credentials,
            domain_id=domain_id,
            cvm_id=cvm_id,
            serial=serial,
        )
        return CertificateOut.of(renewed.credential, renewed.state.value)


@router.post(
    "/{domainID}/cvms/{id}/certificates/{serial}/revoke",
    response_model=CertificateOut,
    summary="Revoke a certificate; an agent connected with it is told to go",
    responses=_CERTIFICATE_RESPONSES,
)
def revoke_certificate(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    serial: SerialPath,
    domain_query: DomainQuery = None,
) -> CertificateOut:
    cvms_service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions) as session:
        revoked = service.revoke_certificate(
            principal, session, domain_id=domain_id, cvm_id=cvm_id, serial=serial
        )
        return CertificateOut.of(revoked.credential, revoked.state.value)
