"""HTTP details a client relies on: HEAD wherever GET is answered, and path
parameters read the same way (trimmed, any case)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import TokenFactory, auth


def test_head_answers_as_get_without_a_body(client: TestClient, token: TokenFactory) -> None:
    for path in ("/backends/health", "/backends/dom-1/cvms"):
        got = client.get(path, headers=auth(token()))
        head = client.head(path, headers=auth(token()))
        assert head.status_code == got.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
    assert client.head("/backends/dom-1/cvms").status_code == 401  # still authenticated


def test_the_provider_in_the_path_is_trimmed_as_the_platform_is(
    client: TestClient, token: TokenFactory
) -> None:
    reply = client.post(
        "/backends/dom-1/cvms/%20external%20/2/%20sev-snp%20",
        json={"name": "trimmed"},
        headers=auth(token()),
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["provider"] == "external"
