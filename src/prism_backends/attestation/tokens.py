"""Attestation tokens: compact JWTs with EAT-style claims, signed ES256.

Pure: the key and the time are passed in. Key storage and rotation live in
``attestation/keys.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from prism_backends.attestation.common import Verified

ALGORITHM = "ES256"
EAT_PROFILE = "tag:prism-backends,2026:attestation"


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK of a P-256 public key, with its RFC 7638 thumbprint as ``kid``."""
    numbers = key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode())
    return {**jwk, "kid": _b64url(thumbprint.digest()), "alg": ALGORITHM, "use": "sig"}


@dataclass(frozen=True, slots=True)
class TokenSubject:
    cvm_id: str
    domain_id: str
    policy: bytes | None


def claims_for(
    verified: Verified,
    subject: TokenSubject,
    *,
    issuer: str,
    now: datetime,
    lifetime: timedelta,
) -> dict[str, Any]:
    """EAT-style claims (RFC 9711 names where they exist) for verified evidence."""
    issued = int(now.timestamp())
    return {
        "iss": issuer,
        "sub": subject.cvm_id,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime.total_seconds()),
        "eat_profile": EAT_PROFILE,
        "eat_nonce": verified.report_data.hex(),
        "domain": subject.domain_id,
        "platform": verified.platform,
        "measurement": verified.measurement,
        "tcb": verified.tcb,
        "policy_digest": (
            "sha256:" + hashlib.sha256(subject.policy).hexdigest() if subject.policy else ""
        ),
        "verdict": "verified",
        "claims": verified.claims,
    }


def sign(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    kid = public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
