"""Issuing and verifying bearer tokens.

Accepted claims: ``sub``; either ``domain`` with ``role``, or ``domains``, a
map of domain id to role. ``exp`` is required. Algorithms are pinned by
configuration: whatever a token's header says is never trusted.
"""

from __future__ import annotations

import binascii
import functools
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from prism_backends.auth.keys import public_jwk
from prism_backends.auth.permissions import Role
from prism_backends.auth.principal import Principal
from prism_backends.auth.remembered import RememberedTokens
from prism_backends.errors import Unauthenticated

DEFAULT_AUDIENCE = "prism-backends"
DEFAULT_MAX_LIFETIME = timedelta(days=90)
LEEWAY_SECONDS = 5  # clocks drift a little; tokens may not outlive their exp by more


def issue_token(
    key: Ed25519PrivateKey,
    *,
    issuer: str,
    domain_id: str,
    role: Role,
    subject: str,
    ttl: timedelta,
    audience: str = DEFAULT_AUDIENCE,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl.total_seconds()),
        "jti": str(uuid.uuid4()),
        "domain": domain_id,
        "role": role.value,
        "aud": audience,
    }
    kid = public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


@dataclass(frozen=True, slots=True)
class _TrustedKey:
    key: Any
    algorithm: str  # the one algorithm this key verifies, whatever a header claims


class TokenVerifier:
    """Checks signature, expiry, issuer and audience; builds the Principal.

    Each trusted key is bound to one algorithm: a token is checked with its
    key's algorithm, and only if that algorithm is pinned by configuration.
    A token that passed is remembered for a short while (``RememberedTokens``).
    """

    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        issuer: str | None,
        audience: str = DEFAULT_AUDIENCE,
        max_lifetime: timedelta = DEFAULT_MAX_LIFETIME,
        local_keys: Sequence[Ed25519PublicKey] = (),
        jwks: Mapping[str, Any] | None = None,
        jwks_url: str | None = None,
        remembered: RememberedTokens | None = None,
    ) -> None:
        if not algorithms or any(alg.lower() == "none" for alg in algorithms):
            raise ValueError("at least one signature algorithm must be pinned, and never 'none'")
        self._algorithms = frozenset(algorithms)
        if not audience:
            raise ValueError("an audience is required: tokens for other services are refused")
        self._issuer = issuer
        self._audience = audience
        self._max_lifetime = max_lifetime
        self._keys: dict[str | None, _TrustedKey] = {}
        for key in local_keys:
            self._keys[public_jwk(key)["kid"]] = _TrustedKey(key, "EdDSA")
        if jwks is not None:
            for jwk in jwks.get("keys", []):
                parsed = jwt.PyJWK(jwk)
                self._keys[parsed.key_id] = _TrustedKey(parsed.key, parsed.algorithm_name)
        self._jwks_client = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        self._remembered = remembered if remembered is not None else RememberedTokens()

    def verify(self, token: str) -> Principal:
        principal = self._remembered.get(token)
        if principal is None:
            principal, exp = self._verify_afresh(token)
            self._remembered.remember(token, principal, valid_until=exp + LEEWAY_SECONDS)
        return principal

    def _verify_afresh(self, token: str) -> tuple[Principal, int]:
        """The principal of a token checked in full, and the token's ``exp``."""
        trusted = self._signing_key(token)
        if trusted.algorithm not in self._algorithms:
            raise Unauthenticated("the token's signing key uses an algorithm that is not accepted")
        try:
            claims = jwt.decode(
                token,
                trusted.key,
                algorithms=[trusted.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub", "aud"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(
                f"the token is for another service (its 'aud' is not {self._audience!r})"
            ) from exc
        except (jwt.PyJWTError, TypeError, ValueError, OverflowError) as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from exc
        self._check_expiry(claims["exp"])
        return _principal_from(claims), claims["exp"]

    def _check_expiry(self, exp: Any) -> None:
        """PyJWT reads ``exp`` through int(): a string or 1e30 passes there."""
        if type(exp) is not int:
            raise Unauthenticated("the token's 'exp' must be an integer (seconds since 1970)")
        latest = time.time() + self._max_lifetime.total_seconds() + LEEWAY_SECONDS
        if exp > latest:
            raise Unauthenticated(
                "the token's 'exp' is further away than tokens may live "
                f"({self._max_lifetime.days} days)"
            )

    def _signing_key(self, token: str) -> _TrustedKey:
        algorithm, kid = _alg_and_kid(token.partition(".")[0])
        if algorithm not in self._algorithms:
            raise Unauthenticated("the token's signature algorithm is not accepted")
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        if self._jwks_client is not None:
            try:
                fetched = self._jwks_client.get_signing_key_from_jwt(token)
            except jwt.PyJWTError as exc:
                raise Unauthenticated("the token was not signed by a trusted key") from exc
            return _TrustedKey(fetched.key, fetched.algorithm_name)
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise Unauthenticated("the token was not signed by a trusted key")


@functools.lru_cache(maxsize=64)
def _alg_and_kid(header_segment: str) -> tuple[object, object]:
    """``alg`` and ``kid`` of a token's header (its first segment), unverified.

    Every token of one issuer carries the same header, so each is decoded once
    (jwt.get_unverified_header would decode the whole token, which
    jwt.decode decodes again). jwt.decode checks the token whole afterwards.
    """
    try:
        header = json.loads(jwt.utils.base64url_decode(header_segment))
    except (ValueError, binascii.Error) as exc:
        raise Unauthenticated("the token is not a well-formed JWT") from exc
    if not isinstance(header, dict):
        raise Unauthenticated("the token is not a well-formed JWT")
    return header.get("alg"), header.get("kid")


def _principal_from(claims: Mapping[str, Any]) -> Principal:
    roles: dict[str, Role] = {}
    grants = claims.get("domains")
    if isinstance(grants, dict):
        for domain_id, role in grants.items():
            if isinstance(domain_id, str) and role in Role.__members__.values():
                roles[domain_id] = Role(role)
    domain_id, role = claims.get("domain"), claims.get("role")
    if isinstance(domain_id, str) and isinstance(role, str) and role in Role.__members__.values():
        roles[domain_id] = Role(role)
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise Unauthenticated("the token's 'sub' claim must be a string")
    return Principal(subject=subject, roles_by_domain=roles)


def load_jwks_file(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{path} is not a JWKS document (an object with a 'keys' list)")
    return document
