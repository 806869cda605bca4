"""The offerings route: what the create route will accept, priced."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from prism_backends.cvms.service import check_domain
from prism_backends.http.deps import DomainQuery, PrincipalDep, RuntimeDep
from prism_backends.http.responses import COMMON_ERRORS, error_responses
from prism_backends.offerings import service
from prism_backends.offerings.schemas import Offerings

router = APIRouter(tags=["offerings"])


@router.get(
    "/{domainID}/offerings",
    response_model=Offerings,
    summary="Providers, platforms and vCPU counts a CVM can be created with, priced",
    responses=error_responses(*COMMON_ERRORS),
)
async def view_offerings(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    domain_id: Annotated[str, Path(alias="domainID")],
    domain_query: DomainQuery = None,
) -> Offerings:
    # async: nothing here touches the store or blocks.
    check_domain(domain_id, domain_query)
    return service.offerings(
        principal, catalog=runtime.catalog, prices=runtime.prices, domain_id=domain_id
    )
