from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from prism_backends.auth.permissions import Role
from prism_backends.providers.config import default_configs
from prism_backends.providers.external import ExternalProvider
from prism_backends.providers.registry import Catalog, CatalogEntry
from prism_backends.runtime import Runtime
from prism_backends.vocabulary import Platform
from tests.conftest import TokenFactory, auth
from tests.fakes.memory_provider import MemoryProvider

DOMAIN = "dom-1"
URL = f"/backends/{DOMAIN}/offerings"


@pytest.fixture
def with_aws(runtime: Runtime) -> None:
    configs = default_configs()
    runtime.catalog = Catalog(
        {
            "external": CatalogEntry(configs["external"], ExternalProvider()),
            "aws": CatalogEntry(
                configs["aws"], MemoryProvider("aws", {Platform.SEV_SNP: frozenset({8, 2, 4})})
            ),
        },
        {"gcp": "no credentials: GOOGLE_APPLICATION_CREDENTIALS is not set"},
    )


def test_the_default_catalog_offers_external_at_no_cost(
    client: TestClient, token: TokenFactory
) -> None:
    response = client.get(URL, headers=auth(token(DOMAIN, role=Role.MEMBER)))
    assert response.status_code == 200
    body = response.json()
    assert [p["name"] for p in body["providers"]] == ["external"]
    external = body["providers"][0]
    assert external["provisions_instantly"] is True
    assert {p["cc_platform"] for p in external["platforms"]} == {"sev-snp", "tdx"}
    for platform in external["platforms"]:
        assert platform["vcpus"], platform
        assert {offer["monthly_cost_estimate"] for offer in platform["vcpus"]} == {"$0.00"}


@pytest.mark.usefixtures("with_aws")
def test_each_offer_costs_what_a_create_of_it_costs(
    client: TestClient, token: TokenFactory
) -> None:
    headers = auth(token(DOMAIN))
    body = client.get(URL, headers=headers).json()
    aws = next(p for p in body["providers"] if p["name"] == "aws")
    assert aws["provisions_instantly"] is False
    assert [p["cc_platform"] for p in aws["platforms"]] == ["sev-snp"]
    offers = aws["platforms"][0]["vcpus"]
    assert [offer["vcpus"] for offer in offers] == [2, 4, 8]
    for offer in offers:
        created = client.post(
            f"/backends/{DOMAIN}/cvms/aws/{offer['vcpus']}/sev-snp",
            headers=headers,
            json={"name": f"priced-{offer['vcpus']}"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["monthly_cost_estimate"] == offer["monthly_cost_estimate"]
    assert offers[0]["monthly_cost_estimate"] != offers[2]["monthly_cost_estimate"]
    assert body["unavailable"] == [
        {"name": "gcp", "reason": "no credentials: GOOGLE_APPLICATION_CREDENTIALS is not set"}
    ]


@pytest.mark.parametrize(
    ("headers_for", "url", "status", "code"),
    [
        (None, URL, 401, "unauthorized"),
        ("other-domain", URL, 403, "forbidden"),
        (DOMAIN, f"{URL}?domainID=elsewhere", 400, "bad_request"),
    ],
)
def test_offerings_refuse_what_the_cvm_routes_refuse(
    client: TestClient,
    token: TokenFactory,
    headers_for: str | None,
    url: str,
    status: int,
    code: str,
) -> None:
    headers = auth(token(headers_for)) if headers_for else {}
    response = client.get(url, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == code
