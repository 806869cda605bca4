"""Signing keys for attestation tokens: one current key, rotated on age, published
until every token it signed has expired. On SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from prism_backends.agents.sealing import Sealer
from prism_backends.attestation import keys, tokens
from prism_backends.attestation.common import Verified
from prism_backends.attestation.models import TokenSigningKey
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.runtime import Runtime

ROTATE_AFTER = timedelta(days=1)
LIFETIME = timedelta(hours=1)
POLICY = keys.KeyPolicy(rotate_after=ROTATE_AFTER, token_lifetime=LIFETIME)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JWKS_PATH = "/backends/.well-known/jwks.json"
ISSUER = "https://prism.example/backends"


def kid(key: ec.EllipticCurvePrivateKey) -> str:
    return tokens.public_jwk(key.public_key())["kid"]


def current(runtime: Runtime, now: datetime) -> ec.EllipticCurvePrivateKey:
    with unit_of_work(runtime.sessions) as session:
        return keys.current_key(session, runtime.sealer, POLICY, now)


def published(runtime: Runtime, now: datetime) -> list[str]:
    with unit_of_work(runtime.sessions) as session:
        document = keys.published_jwks(session, now)
    return [jwk["kid"] for jwk in document["keys"]]


def rows(runtime: Runtime) -> dict[str, TokenSigningKey]:
    with unit_of_work(runtime.sessions) as session:
        found = session.scalars(select(TokenSigningKey)).all()
        session.expunge_all()
    return {row.kid: row for row in found}


def test_the_first_call_creates_one_key_and_later_calls_reuse_it(runtime: Runtime) -> None:
    first = current(runtime, T0)
    again = current(runtime, T0 + timedelta(hours=3))
    just_before_rotation = current(runtime, T0 + ROTATE_AFTER - timedelta(microseconds=1))

    assert kid(again) == kid(first)
    assert kid(just_before_rotation) == kid(first)
    # The very key, unsealed, not merely the same public half.
    assert again.private_numbers() == first.private_numbers()
    stored = rows(runtime)
    assert list(stored) == [kid(first)]
    row = stored[kid(first)]
    assert row.algorithm == "ES256"
    assert row.created_at == T0
    assert row.retired_at is None
    assert row.publish_until is None
    assert b"PRIVATE KEY" not in row.sealed_private_key  # sealed at rest
    assert published(runtime, T0 + timedelta(days=365)) == [kid(first)]


def test_the_key_is_the_same_for_every_process_sharing_the_store(runtime: Runtime) -> None:
    first = current(runtime, T0)
    other_process = Runtime(runtime.settings)
    try:
        assert kid(current(other_process, T0 + timedelta(minutes=1))) == kid(first)
    finally:
        other_process.close()


def test_published_jwks_is_a_jwks_of_public_keys(runtime: Runtime) -> None:
    key = current(runtime, T0)

    with unit_of_work(runtime.sessions) as session:
        document: dict[str, Any] = keys.published_jwks(session, T0)

    (jwk,) = document["keys"]
    assert jwk == tokens.public_jwk(key.public_key())
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert "d" not in jwk
    assert jwt.PyJWK(jwk).key.public_numbers() == key.public_key().public_numbers()


def test_after_the_rotation_age_a_new_key_signs_and_the_old_one_stays_published(
    runtime: Runtime,
) -> None:
    old = current(runtime, T0)
    rotated_at = T0 + ROTATE_AFTER

    new = current(runtime, rotated_at)
    later = current(runtime, rotated_at + timedelta(hours=5))

    assert kid(new) != kid(old)
    assert kid(later) == kid(new)
    stored = rows(runtime)
    assert set(stored) == {kid(old), kid(new)}
    assert stored[kid(old)].retired_at == rotated_at
    assert stored[kid(old)].publish_until == rotated_at + LIFETIME
    assert stored[kid(new)].created_at == rotated_at
    assert stored[kid(new)].retired_at is None
    assert stored[kid(new)].publish_until is None

    # Newest first; the old key until its publish_until (= retirement + token lifetime).
    assert published(runtime, rotated_at) == [kid(new), kid(old)]
    last_moment = rotated_at + LIFETIME - timedelta(microseconds=1)
    assert published(runtime, last_moment) == [kid(new), kid(old)]
    assert published(runtime, rotated_at + LIFETIME) == [kid(new)]
    assert published(runtime, rotated_at + 30 * LIFETIME) == [kid(new)]


def test_each_rotation_retires_the_key_before(runtime: Runtime) -> None:
    signed_with = [kid(current(runtime, T0 + n * ROTATE_AFTER)) for n in range(4)]

    assert len(set(signed_with)) == 4
    stored = rows(runtime)
    unretired = [k for k, row in stored.items() if row.retired_at is None]
    assert unretired == [signed_with[-1]]
    third_rotation = T0 + 3 * ROTATE_AFTER
    assert published(runtime, third_rotation) == [signed_with[3], signed_with[2]]
    assert published(runtime, third_rotation + LIFETIME) == [signed_with[3]]


def _claims(now: datetime) -> dict[str, Any]:
    verified = Verified(
        platform="tdx",
        report_data=bytes(64),
        measurement="7d" * 48,
        tcb={"fmspc": "90c06f000000"},
        claims={"debug": False},
    )
    subject = tokens.TokenSubject("cvm-1", "dom-1", b'{"policy": {}}')
    return tokens.claims_for(verified, subject, issuer=ISSUER, now=now, lifetime=LIFETIME)


def _validate(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """What a relying party does: the key named by the token's kid, from the JWKS."""
    by_kid = {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks).keys}
    header = jwt.get_unverified_header(token)
    key = by_kid.get(header["kid"])
    if key is None:
        raise LookupError(f"kid {header['kid']} is not in the JWKS")
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["ES256"], issuer=ISSUER)
    return claims


def test_a_token_signed_before_rotation_validates_against_the_served_jwks(
    runtime: Runtime, client: TestClient
) -> None:
    # The endpoint publishes as of the real clock: place the keys around it.
    now = utcnow()
    created = now - 2 * ROTATE_AFTER
    rotated_at = now - timedelta(minutes=10)
    old_key = current(runtime, created)
    old_token = tokens.sign(_claims(rotated_at - timedelta(minutes=1)), old_key)
    new_key = current(runtime, rotated_at)
    new_token = tokens.sign(_claims(rotated_at), new_key)

    response = client.get(JWKS_PATH)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    jwks = response.json()
    assert [jwk["kid"] for jwk in jwks["keys"]] == [kid(new_key), kid(old_key)]
    assert jwt.get_unverified_header(old_token)["kid"] == kid(old_key)
    claims = _validate(old_token, jwks)
    assert claims["sub"] == "cvm-1"
    assert claims["measurement"] == "7d" * 48
    assert _validate(new_token, jwks)["sub"] == "cvm-1"
    # No token of the old key outlives its publication.
    assert claims["exp"] <= (rotated_at + LIFETIME).timestamp()
    with unit_of_work(runtime.sessions) as session:
        gone = keys.published_jwks(session, rotated_at + LIFETIME)
    with pytest.raises(LookupError, match="is not in the JWKS"):
        _validate(old_token, gone)


def test_a_token_is_refused_by_a_jwks_without_its_key(runtime: Runtime, client: TestClient) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    current(runtime, utcnow())
    token = tokens.sign(_claims(utcnow()), stranger)

    with pytest.raises(LookupError):
        _validate(token, client.get(JWKS_PATH).json())


def test_the_jwks_is_empty_before_any_token_was_signed(
    runtime: Runtime, client: TestClient
) -> None:
    response = client.get(JWKS_PATH)

    assert response.status_code == 200
    assert response.json() == {"keys": []}
    assert rows(runtime) == {}


def test_a_key_sealed_under_another_kek_cannot_be_used(runtime: Runtime) -> None:
    current(runtime, T0)
    other = Sealer(bytes(32))

    with (
        pytest.raises(ValueError, match="cannot be opened"),
        unit_of_work(runtime.sessions) as session,
    ):
        keys.current_key(session, other, POLICY, T0 + timedelta(minutes=1))


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_concurrent_first_use_leaves_one_current_key(runtime: Runtime) -> None:
    first, second = runtime.sessions(), runtime.sessions()
    try:
        keys.current_key(first, runtime.sealer, POLICY, T0)
        keys.current_key(second, runtime.sealer, POLICY, T0)
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()
    rotated_at = T0 + ROTATE_AFTER
    current(runtime, rotated_at)

    with unit_of_work(runtime.sessions) as session:
        unretired = session.scalar(select(func.count()).where(TokenSigningKey.retired_at.is_(None)))
    assert unretired == 1
    assert len(published(runtime, rotated_at + 10 * LIFETIME)) == 1
