"""Every failure is JSON {"error", "message"} with the right status."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from prism_backends.config import Settings
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime
from tests.conftest import TokenFactory, auth


def test_unknown_route_is_json_404(client: TestClient, token: TokenFactory) -> None:
    reply = client.get("/backends/dom-1/virtual-machines", headers=auth(token()))
    assert reply.status_code == 404
    assert reply.json()["error"] == "not_found"
    assert client.get("/nowhere").json()["error"] == "not_found"


def test_wrong_method_is_json_405_with_allow(client: TestClient, token: TokenFactory) -> None:
    reply = client.put("/backends/dom-1/cvms/x", headers=auth(token()))
    assert reply.status_code == 405
    assert reply.json()["error"] == "method_not_allowed"
    assert set(reply.headers["allow"].replace(" ", "").split(",")) == {"GET", "DELETE"}


def test_oversized_body_is_413(client: TestClient, token: TokenFactory) -> None:
    reply = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp",
        content=b'{"name": "' + b"x" * 70_000 + b'"}',
        headers={**auth(token()), "Content-Type": "application/json"},
    )
    assert reply.status_code == 413
    assert reply.json()["error"] == "payload_too_large"


def test_store_outage_is_503_not_500(tmp_path: Path, token: TokenFactory, data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    runtime = Runtime(settings)
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
            reply = client.get("/backends/dom-1/cvms", headers=auth(token()))
    finally:
        runtime.close()
    assert reply.status_code == 503
    assert reply.json()["error"] == "store_unavailable"


def test_openapi_documents_every_route_and_error_body(client: TestClient) -> None:
    document = client.get("/backends/openapi.json").json()
    paths = document["paths"]
    create = paths["/backends/{domainID}/cvms/{provider}/{vcpu}/{cc_platform}"]["post"]
    assert {"200", "201", "400", "401", "403", "409", "415"} <= set(create["responses"])
    assert "requestBody" in create
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path.endswith(("/health", "/.well-known/jwks.json", "/ui/sign-in")):
                continue  # public, and none of them touches the store
            if path.endswith("/ready"):
                assert {"200", "503"} <= set(operation["responses"])
                continue  # public: a load balancer asks it without a token
            assert {"401", "429", "503"} <= set(operation["responses"]), (method, path)
            error = operation["responses"]["401"]["content"]["application/json"]["schema"]
            assert error["$ref"].endswith("/ErrorOut")


def test_no_viewer_that_needs_a_cdn_is_served(client: TestClient) -> None:
    assert client.get("/backends/docs").status_code == 404
    assert client.get("/backends/openapi.json").status_code == 200


def test_jwks_is_public(client: TestClient) -> None:
    reply = client.get("/backends/.well-known/jwks.json")
    assert reply.status_code == 200
    assert reply.json() == {"keys": []}  # no token signed yet
