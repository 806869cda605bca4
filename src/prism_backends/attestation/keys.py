"""Signing keys for attestation tokens: created on demand, rotated on age, and
published until every token they signed has expired. Kept in the store (the
private key sealed), so every process signs with the same current key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from prism_backends.agents.sealing import Sealer
from prism_backends.attestation.models import TokenSigningKey
from prism_backends.attestation.tokens import ALGORITHM, public_jwk

KEY_BINDING = "attestation-token-signing-key"


@dataclass(frozen=True)
class KeyPolicy:
    rotate_after: timedelta
    token_lifetime: timedelta


def current_key(
    session: Session, sealer: Sealer, policy: KeyPolicy, now: datetime
) -> ec.EllipticCurvePrivateKey:
    """The key to sign with now; a new one when there is none or it is too old.
    The old key stays published as long as tokens it signed may be valid."""
    current = session.scalars(
        select(TokenSigningKey)
        .where(TokenSigningKey.retired_at.is_(None))
        .order_by(TokenSigningKey.created_at.desc())
        .with_for_update()
    ).first()
    keep = (
        current.kid
        if current is not None and now - current.created_at < policy.rotate_after
        else None
    )
    # Retire every other unretired key: after a rotation, and after two processes
    # raced to create the first key, exactly one stays current.
    session.execute(
        update(TokenSigningKey)
        .where(TokenSigningKey.retired_at.is_(None), TokenSigningKey.kid != (keep or ""))
        .values(retired_at=now, publish_until=now + policy.token_lifetime)
        .execution_options(synchronize_session=False)
    )
    if current is not None and keep is not None:
        return _unseal(sealer, current)
    return _create(session, sealer, now)


def published_jwks(session: Session, now: datetime) -> dict[str, Any]:
    """Every key whose tokens may still be valid, newest first."""
    keys = session.scalars(
        select(TokenSigningKey)
        .where(or_(TokenSigningKey.publish_until.is_(None), TokenSigningKey.publish_until > now))
        .order_by(TokenSigningKey.created_at.desc())
    )
    return {"keys": [json.loads(key.public_jwk) for key in keys]}


def _create(session: Session, sealer: Sealer, now: datetime) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(key.public_key())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    session.add(
        TokenSigningKey(
            kid=jwk["kid"],
            algorithm=ALGORITHM,
            public_jwk=json.dumps(jwk),
            sealed_private_key=sealer.seal(pem, bound_to=KEY_BINDING),
            created_at=now,
            retired_at=None,
            publish_until=None,
        )
    )
    session.flush()
    return key


def _unseal(sealer: Sealer, row: TokenSigningKey) -> ec.EllipticCurvePrivateKey:
    pem = sealer.open(row.sealed_private_key, bound_to=KEY_BINDING)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"signing key {row.kid} is not an EC key")
    return key
