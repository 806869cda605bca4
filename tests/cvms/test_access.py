"""Authentication, authorization, tenant isolation and the domain in the path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from prism_backends.auth.keys import public_jwk
from prism_backends.auth.permissions import Role
from prism_backends.config import Settings
from prism_backends.http.app import create_app
from prism_backends.runtime import Runtime
from tests.conftest import TokenFactory, auth
from tests.cvms.conftest import CreateFn

ROUTES = [
    ("POST", "/backends/dom-1/cvms/external/2/sev-snp"),
    ("GET", "/backends/dom-1/cvms"),
    ("GET", "/backends/dom-1/cvms/x"),
    ("DELETE", "/backends/dom-1/cvms/x"),
    ("GET", "/backends/dom-1/cvms/x/statistics"),
    ("GET", "/backends/dom-1/cvms/x/attestation_policy"),
]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned(claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _hs256(claims: dict[str, object], secret: bytes) -> str:
    """The algorithm-confusion attack: HMAC keyed with the public material."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _bad_tokens(data_dir: Path, token: TokenFactory) -> dict[str, str]:
    claims = {
        "sub": "x",
        "domain": "dom-1",
        "role": "admin",
        "exp": int(time.time()) + 600,
        "aud": "prism-backends",
        "iss": "prism-backends",
    }
    stranger = Ed25519PrivateKey.generate()
    ours = (data_dir / "issuer-ed25519.pem").read_bytes()
    return {
        "garbage": "not-a-jwt",
        "expired": token(ttl=timedelta(seconds=-120)),
        "foreign key": jwt.encode(claims, stranger, algorithm="EdDSA"),
        "alg none": _unsigned(claims),
        "hs256 with our key as secret": _hs256(claims, ours),
    }


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_bearer_token(client: TestClient, method: str, path: str) -> None:
    reply = client.request(method, path)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert reply.json()["error"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_bad_tokens_are_401(
    client: TestClient, token: TokenFactory, data_dir: Path, method: str, path: str
) -> None:
    token()  # creates the issuer key
    for label, bad in _bad_tokens(data_dir, token).items():
        reply = client.request(method, path, headers=auth(bad))
        assert reply.status_code == 401, label
        assert reply.headers["www-authenticate"].startswith("Bearer"), label


def test_wrong_scheme_is_401(client: TestClient, token: TokenFactory) -> None:
    reply = client.get("/backends/dom-1/cvms", headers={"Authorization": f"Basic {token()}"})
    assert reply.status_code == 401


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_token_for_another_domain_is_403(
    client: TestClient, token: TokenFactory, method: str, path: str
) -> None:
    reply = client.request(method, path, headers=auth(token("dom-2")))
    assert reply.status_code == 403
    assert reply.json()["error"] == "forbidden"


def test_member_reads_but_cannot_create_or_delete(
    client: TestClient, create: CreateFn, token: TokenFactory
) -> None:
    cvm_id = create().json()["id"]
    member = auth(token(role=Role.MEMBER))
    assert client.get("/backends/dom-1/cvms", headers=member).status_code == 200
    assert client.get(f"/backends/dom-1/cvms/{cvm_id}", headers=member).status_code == 200
    assert (
        client.get(f"/backends/dom-1/cvms/{cvm_id}/statistics", headers=member).status_code == 200
    )
    created = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp", json={"name": "m"}, headers=member
    )
    assert created.status_code == 403
    assert "cvms:create" in created.json()["message"]
    deleted = client.delete(f"/backends/dom-1/cvms/{cvm_id}", headers=member)
    assert deleted.status_code == 403
    assert "cvms:delete" in deleted.json()["message"]


def test_another_domains_cvm_is_indistinguishable_from_none(
    client: TestClient, create: CreateFn, token: TokenFactory
) -> None:
    cvm_id = create(domain="dom-1").json()["id"]
    other = auth(token("dom-2"))
    for suffix in ("", "/statistics", "/attestation_policy"):
        reply = client.get(f"/backends/dom-2/cvms/{cvm_id}{suffix}", headers=other)
        missing = client.get(f"/backends/dom-2/cvms/no-such-id{suffix}", headers=other)
        assert reply.status_code == missing.status_code == 404
        assert reply.text.replace(cvm_id, "ID") == missing.text.replace("no-such-id", "ID")
    assert client.delete(f"/backends/dom-2/cvms/{cvm_id}", headers=other).status_code == 404
    listed = client.get("/backends/dom-2/cvms", headers=other).json()
    assert listed["total"] == 0
    assert client.get(f"/backends/dom-1/cvms/{cvm_id}", headers=auth(token())).status_code == 200


def test_domains_claim_grants_several_domains(runtime: Runtime, data_dir: Path) -> None:
    from prism_backends.auth.keys import load_or_create_issuer_key

    key = load_or_create_issuer_key(data_dir)
    claims = {
        "sub": "u",
        "iss": "prism-backends",
        "exp": int(time.time()) + 60,
        "aud": "prism-backends",
        "domains": {"dom-a": "admin", "dom-b": "member"},
    }
    value = jwt.encode(
        claims, key, algorithm="EdDSA", headers={"kid": public_jwk(key.public_key())["kid"]}
    )
    with TestClient(create_app(runtime)) as client:
        assert client.get("/backends/dom-a/cvms", headers=auth(value)).status_code == 200
        assert client.get("/backends/dom-b/cvms", headers=auth(value)).status_code == 200
        assert client.get("/backends/dom-c/cvms", headers=auth(value)).status_code == 403
        denied = client.post(
            "/backends/dom-b/cvms/external/2/tdx", json={"name": "n"}, headers=auth(value)
        )
        assert denied.status_code == 403


def test_external_issuer_trusted_through_a_jwks_file(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    issuer_key = Ed25519PrivateKey.generate()
    jwk = public_jwk(issuer_key.public_key())
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        jwks_file=jwks_file,
        jwt_issuer="supermq.auth",
        embedded_issuer=False,
    )
    claims = {
        "sub": "u",
        "iss": "supermq.auth",
        "exp": int(time.time()) + 60,
        "aud": "prism-backends",
        "domain": "dom-1",
        "role": "member",
    }
    good = jwt.encode(claims, issuer_key, algorithm="EdDSA", headers={"kid": jwk["kid"]})
    wrong_issuer = jwt.encode(
        {**claims, "iss": "elsewhere"}, issuer_key, algorithm="EdDSA", headers={"kid": jwk["kid"]}
    )
    runtime = Runtime(settings)
    try:
        with TestClient(create_app(runtime)) as client:
            assert client.get("/backends/dom-1/cvms", headers=auth(good)).status_code == 200
            assert client.get("/backends/dom-1/cvms", headers=auth(wrong_issuer)).status_code == 401
    finally:
        runtime.close()


@pytest.mark.parametrize("domain", ["a b", "x" * 65, "dom$", "dóm"])
def test_malformed_domain_id_is_400(client: TestClient, token: TokenFactory, domain: str) -> None:
    reply = client.get(f"/backends/{domain}/cvms", headers=auth(token()))
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("domainID:")


def test_domain_query_parameter_must_agree_with_the_path(
    client: TestClient, create: CreateFn, token: TokenFactory
) -> None:
    headers = auth(token())
    assert client.get("/backends/dom-1/cvms?domainID=dom-1", headers=headers).status_code == 200
    reply = client.get("/backends/dom-1/cvms?domainID=dom-2", headers=headers)
    assert reply.status_code == 400
    assert reply.json()["message"].startswith("domainID:")
    created = client.post(
        "/backends/dom-1/cvms/external/2/sev-snp?domainID=dom-9",
        json={"name": "q"},
        headers=headers,
    )
    assert created.status_code == 400


def test_base_path_is_configurable(make_settings: object, token: TokenFactory) -> None:
    assert callable(make_settings)
    runtime = Runtime(make_settings(base_path="/api/v1/"))
    try:
        with TestClient(create_app(runtime)) as client:
            headers = auth(token())
            assert client.get("/api/v1/dom-1/cvms", headers=headers).status_code == 200
            assert client.get("/backends/dom-1/cvms", headers=headers).status_code == 404
            assert client.get("/api/v1/openapi.json").status_code == 200
    finally:
        runtime.close()
