"""Parameters read by hand (http/params.py) are documented as FastAPI documents the
same parameters declared in a signature, so the OpenAPI document does not depend on
which way a route takes them."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.testclient import TestClient

from prism_backends.http.params import Param, read_by_hand

PARAMS = (
    Param("domainID", "path"),
    Param("kind", "path", "A kind."),
    Param("domainID", "query", "Optional; must equal the path's domain id."),
    Param("cc_platform", "query", "sev-snp or tdx."),
    Param("Idempotency-Key", "header"),
)


def _document() -> dict[str, dict[str, object]]:
    app = FastAPI()

    @app.get("/signature/{domainID}/{kind}")
    def by_signature(
        domain_id: Annotated[str, Path(alias="domainID")],
        kind: Annotated[str, Path(description="A kind.")],
        domain_query: Annotated[
            str | None,
            Query(alias="domainID", description="Optional; must equal the path's domain id."),
        ] = None,
        cc_platform: Annotated[str | None, Query(description="sev-snp or tdx.")] = None,
        key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> None:
        return None

    @app.get("/by-hand/{domainID}/{kind}", openapi_extra=read_by_hand(*PARAMS))
    async def by_hand(request: Request) -> None:
        return None

    paths = app.openapi()["paths"]
    return {
        "signature": paths["/signature/{domainID}/{kind}"]["get"],
        "by_hand": paths["/by-hand/{domainID}/{kind}"]["get"],
    }


def test_hand_read_parameters_are_documented_as_a_signature_would_be() -> None:
    document = _document()
    assert document["by_hand"]["parameters"] == document["signature"]["parameters"]


def test_hand_read_routes_name_the_bearer_scheme() -> None:
    assert _document()["by_hand"]["security"] == [{"HTTPBearer": []}]


def test_the_hand_read_cvm_routes_document_their_parameters(client: TestClient) -> None:
    paths = client.get("/backends/openapi.json").json()["paths"]
    listed = [p["name"] for p in paths["/backends/{domainID}/cvms"]["get"]["parameters"]]
    assert listed == [
        "domainID",
        "domainID",
        "limit",
        "offset",
        "name",
        "status",
        "days",
        "cc_platform",
        "include",
    ]
    create = paths["/backends/{domainID}/cvms/{provider}/{vcpu}/{cc_platform}"]["post"]
    assert [(p["name"], p["in"]) for p in create["parameters"]] == [
        ("domainID", "path"),
        ("provider", "path"),
        ("vcpu", "path"),
        ("cc_platform", "path"),
        ("domainID", "query"),
        ("Idempotency-Key", "header"),
    ]
    assert create["security"] == [{"HTTPBearer": []}]
