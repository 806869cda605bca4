from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import TokenFactory, auth


def test_create_then_view(client: TestClient, token: TokenFactory) -> None:
    headers = auth(token("dom-1"))
    created = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp", json={"name": "a"}, headers=headers
    )
    assert created.status_code == 201, created.text
    cvm_id = created.json()["id"]
    viewed = client.get(f"/backends/dom-1/cvms/{cvm_id}", headers=headers)
    assert viewed.json()["name"] == "a"
