"""The six CVM routes. Each parses, opens the transaction, calls one service
function with the principal and the session (view, list and create: a plain
Connection, as they read rows or write whole ones alone), and returns a
schema, or for the routes that show CVMs the JSON of ``cvm_document``
directly (their ``response_model`` documents it). View, list and create read
their parameters from the request themselves (http/params.py;
docs/architecture.md, "Request path")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from prism_backends.cvms import service
from prism_backends.cvms.schemas import (
    AttestationPolicyOut,
    AttestationStats,
    CreateCVMRequest,
    CVMOut,
    CVMPage,
    StatSample,
    StatsOut,
    cvm_document,
    rfc3339,
)
from prism_backends.db.engine import read_transaction, unit_of_work, write_transaction
from prism_backends.errors import CreatedConcurrently
from prism_backends.http.deps import (
    DomainQuery,
    PrincipalDep,
    RuntimeDep,
    get_principal,
    read_body,
    runtime_of,
)
from prism_backends.http.params import DOMAIN_ID, DOMAIN_QUERY, Param, read_by_hand
from prism_backends.http.responses import COMMON_ERRORS, error_responses

router = APIRouter(tags=["cvms"])


CVM_ID = Param("id", "path")
PROVIDER = Param("provider", "path", "azure, gcp, aws, external or ultraviolet.")
VCPU = Param("vcpu", "path", "A vCPU count the provider offers.")
CC_PLATFORM_PATH = Param("cc_platform", "path", "sev-snp or tdx (aliases accepted).")
IDEMPOTENCY_KEY = Param("Idempotency-Key", "header")
LIMIT = Param("limit", "query", "1-100, default 10.")
OFFSET = Param("offset", "query", ">= 0, default 0.")
NAME = Param("name", "query", "Case-insensitive substring.")
STATUS = Param("status", "query", "A status; 'inactive' lists deleted CVMs.")
DAYS = Param("days", "query", "Created within the last N days.")
CC_PLATFORM = Param("cc_platform", "query", "sev-snp or tdx.")
INCLUDE = Param(
    "include",
    "query",
    "'attestation' to carry each CVM's evidence; without it lists leave "
    "'attestation' empty (View always carries it).",
)


# View, list and create read their parameters themselves (http/params.py):
# each authenticates and parses on the event loop, then runs its transaction,
# and renders, on the thread pool, one hop as a plain ``def`` route would take.


@router.post(
    "/{domainID}/cvms/{provider}/{vcpu}/{cc_platform}",
    status_code=201,
    response_model=CVMOut,
    summary="Create a CVM",
    responses={
        200: {"model": CVMOut, "description": "Idempotency-Key replay: the CVM created before."},
        201: {"description": "Recorded; provisioning goes on in the background."},
        **error_responses(*COMMON_ERRORS, 409, 413, 415),
    },
    openapi_extra={
        **read_by_hand(DOMAIN_ID, PROVIDER, VCPU, CC_PLATFORM_PATH, DOMAIN_QUERY, IDEMPOTENCY_KEY),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": CreateCVMRequest.model_json_schema(
                        ref_template="#/components/schemas/{model}"
                    )
                }
            },
        },
    },
)
async def create_cvm(request: Request) -> Response:
    body = await read_body(request)
    principal = await get_principal(request)
    runtime = runtime_of(request)
    path = request.path_params
    domain_id = path[DOMAIN_ID.name]
    service.check_domain(domain_id, request.query_params.get(DOMAIN_QUERY.name))

    def create_once(draft: service.DraftCVM) -> service.CreateOutcome:
        with write_transaction(runtime.engine) as connection:
            return service.record_cvm(principal, connection, draft)

    def respond() -> Response:
        draft = service.draft_cvm(
            principal,
            catalog=runtime.catalog,
            prices=runtime.prices,
            credentials=runtime.credentials,
            domain_id=domain_id,
            provider_name=path[PROVIDER.name],
            vcpu=path[VCPU.name],
            cc_platform=path[CC_PLATFORM_PATH.name],
            content_type=request.headers.get("content-type", ""),
            body=body,
            idempotency_key=request.headers.get(IDEMPOTENCY_KEY.name),
        )
        try:
            outcome = create_once(draft)
        except CreatedConcurrently:
            # A retried request whose first attempt was still in flight: once that one
            # has committed, this one is its replay (or, for a name, a plain conflict).
            outcome = create_once(draft)
        location = f"{runtime.settings.base_path}/{domain_id}/cvms/{outcome.cvm.id}"
        return JSONResponse(
            cvm_document(outcome.cvm, outcome.cvm.attestation),
            status_code=201 if outcome.created else 200,
            headers={"Location": location},
        )

    return await run_in_threadpool(respond)


@router.get(
    "/{domainID}/cvms",
    response_model=CVMPage,
    summary="List CVMs",
    responses=error_responses(*COMMON_ERRORS),
    openapi_extra=read_by_hand(
        DOMAIN_ID, DOMAIN_QUERY, LIMIT, OFFSET, NAME, STATUS, DAYS, CC_PLATFORM, INCLUDE
    ),
)
async def list_cvms(request: Request) -> Response:
    principal = await get_principal(request)
    runtime = runtime_of(request)
    domain_id = request.path_params[DOMAIN_ID.name]
    query = request.query_params
    service.check_domain(domain_id, query.get(DOMAIN_QUERY.name))

    def respond() -> Response:
        with read_transaction(runtime.engine) as connection:
            listing = service.list_cvms(
                principal,
                connection,
                domain_id=domain_id,
                limit=query.get(LIMIT.name),
                offset=query.get(OFFSET.name),
                name=query.get(NAME.name),
                status=query.get(STATUS.name),
                days=query.get(DAYS.name),
                cc_platform=query.get(CC_PLATFORM.name),
                include=query.get(INCLUDE.name),
            )
        with_evidence = listing.with_evidence
        cvms = [
            cvm_document(row, row.attestation if with_evidence else None) for row in listing.rows
        ]
        return JSONResponse(
            {"cvms": cvms, "total": listing.total, "limit": listing.limit, "offset": listing.offset}
        )

    return await run_in_threadpool(respond)


@router.get(
    "/{domainID}/cvms/{id}",
    response_model=CVMOut,
    summary="View a CVM",
    responses=error_responses(*COMMON_ERRORS, 404),
    openapi_extra=read_by_hand(DOMAIN_ID, CVM_ID, DOMAIN_QUERY),
)
async def view_cvm(request: Request) -> Response:
    principal = await get_principal(request)
    runtime = runtime_of(request)
    domain_id = request.path_params[DOMAIN_ID.name]
    cvm_id = request.path_params[CVM_ID.name]
    service.check_domain(domain_id, request.query_params.get(DOMAIN_QUERY.name))

    def respond() -> Response:
        with read_transaction(runtime.engine) as connection:
            cvm = service.get_cvm(principal, connection, domain_id=domain_id, cvm_id=cvm_id)
        return JSONResponse(cvm_document(cvm, cvm.attestation))

    return await run_in_threadpool(respond)


@router.delete(
    "/{domainID}/cvms/{id}",
    status_code=204,
    response_class=Response,
    summary="Delete a CVM",
    responses={
        204: {"description": "Deleted; teardown goes on in the background."},
        **error_responses(*COMMON_ERRORS, 404),
    },
)
def delete_cvm(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    domain_query: DomainQuery = None,
) -> Response:
    service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions) as session:
        service.delete_cvm(principal, session, domain_id=domain_id, cvm_id=cvm_id)
    return Response(status_code=204)


@router.get(
    "/{domainID}/cvms/{id}/statistics",
    response_model=StatsOut,
    summary="Uptime samples of a CVM, newest first",
    responses=error_responses(*COMMON_ERRORS, 404),
)
def view_statistics(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    domain_query: DomainQuery = None,
    days: Annotated[str | None, Query(description="Window in days, default 1.")] = None,
    limit: Annotated[str | None, Query(description="1-10000, default 1000.")] = None,
    offset: Annotated[str | None, Query(description=">= 0, default 0.")] = None,
) -> StatsOut:
    service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions, read_only=True) as session:
        page = service.get_statistics(
            principal,
            session,
            domain_id=domain_id,
            cvm_id=cvm_id,
            days=days,
            limit=limit,
            offset=offset,
            retention_days=runtime.settings.stats_retention_days,
        )
    samples = [
        StatSample(
            id=sample_id, cvm_id=cvm_id, timestamp=rfc3339(sample.timestamp), status=sample.up
        )
        for sample_id, sample in page.samples
    ]
    attestation = AttestationStats(
        verified=page.cvm.attestations_verified,
        failed=page.cvm.attestations_failed,
        last_error=page.cvm.attestation_error,
        last_verified_at=rfc3339(page.cvm.attested_at),
    )
    return StatsOut(
        cvm_stats=samples, total=page.total, uptime=page.uptime, attestation=attestation
    )


@router.get(
    "/{domainID}/cvms/{id}/attestation_policy",
    response_model=AttestationPolicyOut,
    summary="The attestation policy clients verify this CVM against",
    responses=error_responses(*COMMON_ERRORS, 404, 409),
)
def view_attestation_policy(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    cvm_id: Annotated[str, Path(alias="id")],
    domain_query: DomainQuery = None,
    policy_format: Annotated[
        str | None,
        Query(
            alias="format",
            description="Omitted: the policy as stored. 'corim' or 'json': converted where "
            "every check can be expressed (400 naming what cannot).",
        ),
    ] = None,
) -> AttestationPolicyOut:
    service.check_domain(domain_id, domain_query)
    with unit_of_work(runtime.sessions, read_only=True) as session:
        policy = service.get_attestation_policy(
            principal, session, domain_id=domain_id, cvm_id=cvm_id, policy_format=policy_format
        )
    return AttestationPolicyOut(attestation_policy=policy)
