"""Bearer tokens: what the embedded issuer signs, and what the verifier lets in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prism_backends.auth.keys import load_or_create_issuer_key, public_jwk
from prism_backends.auth.permissions import Permission, Role
from prism_backends.auth.tokens import (
    DEFAULT_AUDIENCE,
    TokenVerifier,
    issue_token,
    load_jwks_file,
)
from prism_backends.errors import Unauthenticated

ISSUER = "prism-backends"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _verifier(
    *keys: Ed25519PrivateKey,
    algorithms: Sequence[str] = ("EdDSA",),
    audience: str = DEFAULT_AUDIENCE,
    jwks: dict[str, Any] | None = None,
) -> TokenVerifier:
    return TokenVerifier(
        algorithms=list(algorithms),
        issuer=ISSUER,
        audience=audience,
        local_keys=[k.public_key() for k in keys],
        jwks=jwks,
    )


def _issue(
    key: Ed25519PrivateKey,
    domain: str = "dom-1",
    role: Role = Role.ADMIN,
    ttl: timedelta = timedelta(hours=1),
    audience: str = DEFAULT_AUDIENCE,
) -> str:
    return issue_token(
        key,
        issuer=ISSUER,
        domain_id=domain,
        role=role,
        subject="alice",
        ttl=ttl,
        audience=audience,
    )


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": "alice", "iat": now, "exp": now + 3600, "aud": DEFAULT_AUDIENCE,
    }  # fmt: skip
    claims.update(extra)
    return {name: value for name, value in claims.items() if value is not None}


def _sign(
    claims: dict[str, Any],
    key: Ed25519PrivateKey,
    *,
    kid: str | None = None,
    with_kid: bool = True,
) -> str:
    """An EdDSA token with any claims; its kid is the signing key's unless given."""
    headers: dict[str, Any] = {}
    if with_kid:
        headers["kid"] = kid or public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    head = _b64url(json.dumps(header).encode())
    body = _b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64url(signature)}"


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    head = _b64url(json.dumps(header).encode())
    body = _b64url(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(mac)}"


# --- the round trip -----------------------------------------------------------------


def test_issued_token_verifies_to_its_subject_domain_and_role(key: Ed25519PrivateKey) -> None:
    principal = _verifier(key).verify(_issue(key, domain="dom-7", role=Role.MEMBER))

    assert principal.subject == "alice"
    assert dict(principal.roles_by_domain) == {"dom-7": Role.MEMBER}
    assert principal.permissions_in("dom-7") == frozenset({Permission.READ})
    assert principal.permissions_in("dom-8") == frozenset()


def test_admin_token_grants_every_permission_in_its_domain_only(key: Ed25519PrivateKey) -> None:
    principal = _verifier(key).verify(_issue(key, domain="dom-1", role=Role.ADMIN))

    assert principal.permissions_in("dom-1") == frozenset(Permission)
    assert principal.permissions_in("dom-2") == frozenset()


def test_issued_token_carries_the_standard_claims(key: Ed25519PrivateKey) -> None:
    before = int(time.time())
    token = _issue(key, ttl=timedelta(minutes=30), audience="prism")

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token, key.public_key(), algorithms=["EdDSA"], issuer=ISSUER, audience="prism"
    )

    assert header["alg"] == "EdDSA"
    assert header["kid"] == public_jwk(key.public_key())["kid"]
    assert claims["domain"] == "dom-1"
    assert claims["role"] == "admin"
    assert claims["aud"] == "prism"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 30 * 60
    assert (
        claims["jti"]
        != jwt.decode(
            _issue(key, audience="prism"),
            key.public_key(),
            algorithms=["EdDSA"],
            issuer=ISSUER,
            audience="prism",
        )["jti"]
    )


def test_issuer_key_in_data_dir_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_issuer_key(tmp_path / "data")
    second = load_or_create_issuer_key(tmp_path / "data")

    (key_file,) = (tmp_path / "data").iterdir()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert _verifier(second).verify(_issue(first)).subject == "alice"


# --- refusals -----------------------------------------------------------------------


def test_expired_token_is_refused(key: Ed25519PrivateKey) -> None:
    token = _issue(key, ttl=timedelta(minutes=-5))
    with pytest.raises(Unauthenticated, match="expired"):
        _verifier(key).verify(token)


def test_token_expired_within_the_leeway_is_still_accepted(key: Ed25519PrivateKey) -> None:
    token = _sign(_claims(exp=int(time.time()) - 2), key)
    assert _verifier(key).verify(token).subject == "alice"


def test_the_leeway_is_small(key: Ed25519PrivateKey) -> None:
    with pytest.raises(Unauthenticated, match="expired"):
        _verifier(key).verify(_sign(_claims(exp=int(time.time()) - 10), key))


def test_a_token_for_another_service_or_for_none_is_refused(key: Ed25519PrivateKey) -> None:
    with pytest.raises(Unauthenticated, match="another service"):
        _verifier(key).verify(_sign(_claims(aud="billing"), key))
    with pytest.raises(Unauthenticated, match="aud"):
        _verifier(key).verify(_sign(_claims(aud=None), key))
    with pytest.raises(ValueError, match="audience"):
        TokenVerifier(algorithms=["EdDSA"], issuer=ISSUER, audience="")


@pytest.mark.parametrize(
    "exp",
    [str(int(time.time()) + 600), float(int(time.time()) + 600), 1e30, 10**30, True],
    ids=["string", "float", "1e30", "huge-int", "bool"],
)
def test_an_exp_that_is_not_a_plausible_integer_is_refused(
    key: Ed25519PrivateKey, exp: object
) -> None:
    with pytest.raises(Unauthenticated, match="exp"):
        _verifier(key).verify(_sign(_claims(exp=exp), key))


def test_an_exp_beyond_the_longest_lifetime_is_refused(key: Ed25519PrivateKey) -> None:
    verifier = TokenVerifier(
        algorithms=["EdDSA"], issuer=ISSUER, local_keys=[key.public_key()],
        max_lifetime=timedelta(days=1),
    )  # fmt: skip
    assert verifier.verify(_sign(_claims(exp=int(time.time()) + 3600), key))
    with pytest.raises(Unauthenticated, match="further away"):
        verifier.verify(_sign(_claims(exp=int(time.time()) + 2 * 86400), key))


def test_token_without_exp_is_refused(key: Ed25519PrivateKey) -> None:
    claims = _claims(domain="dom-1", role="admin")
    del claims["exp"]
    with pytest.raises(Unauthenticated):
        _verifier(key).verify(_sign(claims, key))


def test_token_without_sub_is_refused(key: Ed25519PrivateKey) -> None:
    claims = _claims(domain="dom-1", role="admin")
    del claims["sub"]
    with pytest.raises(Unauthenticated):
        _verifier(key).verify(_sign(claims, key))


def test_token_signed_by_another_key_is_refused(key: Ed25519PrivateKey) -> None:
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(Unauthenticated):
        _verifier(key).verify(_issue(stranger))


def test_token_claiming_a_trusted_kid_but_signed_by_another_key_is_refused(
    key: Ed25519PrivateKey,
) -> None:
    stranger = Ed25519PrivateKey.generate()
    trusted_kid = public_jwk(key.public_key())["kid"]
    token = _sign(_claims(domain="dom-1", role="admin"), stranger, kid=trusted_kid)
    with pytest.raises(Unauthenticated):
        _verifier(key).verify(token)


def test_token_without_kid_is_checked_against_the_only_key(key: Ed25519PrivateKey) -> None:
    assert _verifier(key).verify(_sign(_claims(), key, with_kid=False)).subject == "alice"
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(Unauthenticated):
        _verifier(key).verify(_sign(_claims(), stranger, with_kid=False))


def test_token_without_kid_is_refused_when_several_keys_are_trusted(
    key: Ed25519PrivateKey,
) -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(Unauthenticated):
        _verifier(key, other).verify(_sign(_claims(), key, with_kid=False))


def test_wrong_issuer_is_refused(key: Ed25519PrivateKey) -> None:
    with pytest.raises(Unauthenticated):
        _verifier(key).verify(_sign(_claims(iss="someone-else"), key))


def test_wrong_audience_is_refused_when_one_is_expected(key: Ed25519PrivateKey) -> None:
    verifier = _verifier(key, audience="prism")
    assert verifier.verify(_issue(key, audience="prism")).subject == "alice"
    with pytest.raises(Unauthenticated):
        verifier.verify(_issue(key, audience="elsewhere"))
    with pytest.raises(Unauthenticated):
        verifier.verify(_issue(key))


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "Bearer x.y.z"])
def test_garbage_is_refused(key: Ed25519PrivateKey, garbage: str) -> None:
    with pytest.raises(Unauthenticated):
        _verifier(key).verify(garbage)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_token_is_refused(key: Ed25519PrivateKey, alg: str) -> None:
    kid = public_jwk(key.public_key())["kid"]
    claims = _claims(domain="d", role="admin")
    unsigned = _hand_made({"alg": alg, "typ": "JWT", "kid": kid}, claims, b"")
    # An unsigned token that keeps a real signature must not pass either.
    signature = _issue(key).split(".")[2]
    resigned = f"{unsigned}{signature}"
    for token in (unsigned, resigned):
        with pytest.raises(Unauthenticated):
            _verifier(key).verify(token)


@pytest.mark.parametrize("algorithms", [["none"], ["EdDSA", "none"], []])
def test_verifier_refuses_to_be_configured_without_a_signature(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="none"):
        TokenVerifier(algorithms=algorithms, issuer=ISSUER)


def _public_key_secrets(key: Ed25519PrivateKey) -> list[bytes]:
    public = key.public_key()
    return [
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public_jwk(public)["x"].encode(),
    ]


def test_hs256_token_made_with_the_public_key_as_secret_is_refused(
    key: Ed25519PrivateKey,
) -> None:
    kid = public_jwk(key.public_key())["kid"]
    for secret in _public_key_secrets(key):
        token = _hs256(
            {"alg": "HS256", "typ": "JWT", "kid": kid}, _claims(domain="d", role="admin"), secret
        )
        with pytest.raises(Unauthenticated):
            _verifier(key).verify(token)


def test_hs256_forgery_is_refused_even_where_hs256_is_also_accepted(
    key: Ed25519PrivateKey,
) -> None:
    # A deployment that also trusts an HS256 issuer must still bind each key to
    # its own algorithm: the Ed25519 key is never an HMAC secret. The forgery is
    # a bad token (401), not a crash.
    kid = public_jwk(key.public_key())["kid"]
    verifier = _verifier(key, algorithms=["EdDSA", "HS256"])
    for secret in _public_key_secrets(key):
        token = _hs256(
            {"alg": "HS256", "typ": "JWT", "kid": kid}, _claims(domain="d", role="admin"), secret
        )
        with pytest.raises(Unauthenticated):
            verifier.verify(token)


def test_pinned_algorithms_are_enforced_whatever_the_header_says(
    key: Ed25519PrivateKey,
) -> None:
    token = _issue(key)  # a perfectly good EdDSA token
    assert _verifier(key).verify(token).subject == "alice"
    # A verifier pinned to other algorithms refuses it although its header names EdDSA.
    with pytest.raises(Unauthenticated):
        _verifier(key, algorithms=["RS256"]).verify(token)
    with pytest.raises(Unauthenticated):
        _verifier(key, algorithms=["ES256", "HS256"]).verify(token)


def test_header_naming_a_pinned_algorithm_cannot_change_how_it_is_checked(
    key: Ed25519PrivateKey,
) -> None:
    # An EdDSA signature relabelled as RS256: the header lies, the token must fail.
    good = _issue(key)
    _, body, signature = good.split(".")
    kid = public_jwk(key.public_key())["kid"]
    head = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    with pytest.raises(Unauthenticated):
        _verifier(key, algorithms=["EdDSA", "RS256"]).verify(f"{head}.{body}.{signature}")


# --- JWKS -----------------------------------------------------------------------------


def test_keys_from_a_jwks_file_are_trusted(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    external = Ed25519PrivateKey.generate()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(external.public_key())]}), encoding="utf-8")

    verifier = _verifier(key, jwks=load_jwks_file(path))

    assert verifier.verify(_issue(external, domain="ext")).roles_by_domain == {"ext": Role.ADMIN}
    # the embedded issuer is still trusted beside it
    assert verifier.verify(_issue(key)).subject == "alice"
    # and a key in neither is not
    with pytest.raises(Unauthenticated):
        verifier.verify(_issue(Ed25519PrivateKey.generate()))


def test_rsa_keys_from_a_jwks_file_are_trusted_when_rs256_is_pinned(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update({"kid": "rsa-1", "alg": "RS256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    token = jwt.encode(
        _claims(domains={"dom-1": "member"}), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    )

    verifier = TokenVerifier(algorithms=["RS256"], issuer=ISSUER, jwks=load_jwks_file(path))

    assert verifier.verify(token).roles_by_domain == {"dom-1": Role.MEMBER}


@pytest.mark.parametrize("document", ['["not", "jwks"]', '{"keys": {}}', "{}"])
def test_a_file_that_is_not_jwks_is_an_error_naming_it(tmp_path: Path, document: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(ValueError, match=str(path)):
        load_jwks_file(path)


# --- the roles a token grants -------------------------------------------------------------


def test_domains_map_grants_a_role_per_domain(key: Ed25519PrivateKey) -> None:
    token = _sign(_claims(domains={"dom-a": "admin", "dom-b": "member"}), key)

    principal = _verifier(key).verify(token)

    assert dict(principal.roles_by_domain) == {"dom-a": Role.ADMIN, "dom-b": Role.MEMBER}
    assert Permission.DELETE in principal.permissions_in("dom-a")
    assert principal.permissions_in("dom-b") == frozenset({Permission.READ})


def test_unknown_roles_in_the_domains_map_grant_nothing(key: Ed25519PrivateKey) -> None:
    token = _sign(_claims(domains={"dom-a": "owner", "dom-b": "member", "dom-c": 1}), key)

    principal = _verifier(key).verify(token)

    assert dict(principal.roles_by_domain) == {"dom-b": Role.MEMBER}
    assert principal.permissions_in("dom-a") == frozenset()


def test_domain_and_domains_claims_combine(key: Ed25519PrivateKey) -> None:
    token = _sign(_claims(domain="dom-x", role="admin", domains={"dom-y": "member"}), key)

    principal = _verifier(key).verify(token)

    assert dict(principal.roles_by_domain) == {"dom-x": Role.ADMIN, "dom-y": Role.MEMBER}


def test_token_without_any_role_authenticates_but_grants_nothing(key: Ed25519PrivateKey) -> None:
    principal = _verifier(key).verify(_sign(_claims(), key))
    assert principal.subject == "alice"
    assert principal.roles_by_domain == {}
